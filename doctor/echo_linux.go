package doctor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Echoer sends ICMP echo requests over one interface (wg0) with the
// don't-fragment bit set, so that a request bigger than the path carries
// is lost rather than fragmented: the probe of the path MTU. It needs
// CAP_NET_RAW (the appliance runs as root).
type Echoer struct {
	conn *net.IPConn
	id   uint16

	mu      sync.Mutex
	seq     uint16
	waiting map[uint16]chan time.Time
	done    chan struct{}
}

// NewEchoer opens a raw ICMP socket bound to iface, sending from src.
func NewEchoer(iface string, src netip.Addr) (*Echoer, error) {
	c, err := net.ListenIP("ip4:icmp", &net.IPAddr{IP: src.AsSlice()})
	if err != nil {
		return nil, fmt.Errorf("opening an ICMP socket on %s: %w", iface, err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE),
			unix.BindToDevice(int(fd), iface))
	}); err != nil || serr != nil {
		c.Close()
		return nil, fmt.Errorf("setting don't-fragment on the ICMP socket on %s: %w", iface, errors.Join(err, serr))
	}
	var b [2]byte
	rand.Read(b[:])
	e := &Echoer{conn: c, id: binary.BigEndian.Uint16(b[:]), waiting: map[uint16]chan time.Time{}, done: make(chan struct{})}
	go e.read()
	return e, nil
}

// Close stops it.
func (e *Echoer) Close() error {
	err := e.conn.Close()
	<-e.done
	return err
}

func (e *Echoer) read() {
	defer close(e.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := e.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		at := time.Now()
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := m.Body.(*icmp.Echo)
		if !ok || uint16(echo.ID) != e.id {
			continue
		}
		e.mu.Lock()
		ch := e.waiting[uint16(echo.Seq)]
		delete(e.waiting, uint16(echo.Seq))
		e.mu.Unlock()
		if ch != nil {
			ch <- at
		}
	}
}

// Echo sends one request of size bytes (the whole IP packet, as the
// interface's MTU counts it) to dst and waits for its reply up to
// timeout: the round trip, or an error (ErrNoReply: none came).
func (e *Echoer) Echo(ctx context.Context, dst netip.Addr, size int, timeout time.Duration) (time.Duration, error) {
	if size < 28 {
		size = 28
	}
	ch := make(chan time.Time, 1)
	e.mu.Lock()
	e.seq++
	seq := e.seq
	e.waiting[seq] = ch
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.waiting, seq)
		e.mu.Unlock()
	}()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(e.id), Seq: int(seq), Data: make([]byte, size-28)}}
	pkt, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	sent := time.Now()
	if _, err := e.conn.WriteTo(pkt, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		if errors.Is(err, syscall.EMSGSIZE) {
			return 0, fmt.Errorf("%d bytes do not fit this interface's MTU: %w", size, err)
		}
		return 0, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case at := <-ch:
		return at.Sub(sent), nil
	case <-t.C:
		return 0, ErrNoReply
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// LargestEcho returns the largest of sizes (largest first) that dst
// answers, each tried up to tries times (0: none was): the first size
// alone, then, only if it got no answer, the others all at once.
func (e *Echoer) LargestEcho(ctx context.Context, dst netip.Addr, sizes []int, tries int, timeout time.Duration) int {
	answered := func(size int) bool {
		for range tries {
			if _, err := e.Echo(ctx, dst, size, timeout); err == nil {
				return true
			}
		}
		return false
	}
	if len(sizes) == 0 {
		return 0
	}
	if answered(sizes[0]) {
		return sizes[0]
	}
	var mu sync.Mutex
	best := 0
	var wg sync.WaitGroup
	for _, size := range sizes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if answered(size) {
				mu.Lock()
				best = max(best, size)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return best
}
