package tunnel

import (
	"sync"
	"time"
	"unsafe"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"
)

// wireguard-go gives every packet in flight a 64 KiB buffer, and its queues
// hold up to 1024 batches each, so a TCP flow that meets no loss inside it
// keeps thousands of packets (hundreds of MiB) queued in the process. An
// inflight limiter bounds that per direction, the way a router's queue
// does: it stops reading (from wg0 going out, from the UDP socket coming
// in) while max packets are between the read and the write at the other
// side, so the kernel's own queue in front (wg0's, the socket's) fills and
// drops, and TCP slows down. A packet is known by its buffer: wireguard-go
// reads it into the buffer it later sends or writes from.

// inflightExpiry forgets a packet wireguard-go dropped or consumed
// (handshakes, keepalives, packets to a peer without an endpoint) and so
// never sent or wrote: after this long it no longer counts.
const inflightExpiry = time.Second

// maxAdmissionWait bounds one wait for room: a read proceeds after it even
// when the count is still at max.
const maxAdmissionWait = inflightExpiry

// inflight counts the packets read and not yet written in one direction.
type inflight struct {
	max  int
	wait time.Duration // maxAdmissionWait
	now  func() time.Time
	mu   sync.Mutex
	pkts map[uintptr]time.Time // by the address of the packet's buffer
	room chan struct{}         // signalled when a packet leaves
	done chan struct{}         // closed by close: waits end
	once sync.Once
	// stalled is called when a read waited maxAdmissionWait and no packet
	// left meanwhile: the data path is stuck, or packets are no longer
	// recognised when they leave (a wireguard-go that sends from other
	// buffers than it read into), which would cap the tunnel at max
	// packets a second. It must not block.
	stalled func()
}

func newInflight(max int, stalled func()) *inflight {
	return &inflight{max: max, wait: maxAdmissionWait, now: time.Now, pkts: make(map[uintptr]time.Time, max),
		room: make(chan struct{}, 1), done: make(chan struct{}), stalled: stalled}
}

func bufferKey(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// admit waits until fewer than max packets are in flight, at most
// f.wait (then it calls stalled), or until close.
func (f *inflight) admit() {
	var timeout <-chan time.Time
	for {
		f.mu.Lock()
		n := f.expireLocked()
		f.mu.Unlock()
		if n < f.max {
			return
		}
		if timeout == nil {
			t := time.NewTimer(f.wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-f.room:
		case <-timeout:
			if f.stalled != nil {
				f.stalled()
			}
			return
		case <-f.done:
			return
		}
	}
}

// expireLocked forgets packets older than inflightExpiry when the count
// is at max, and returns the count.
func (f *inflight) expireLocked() int {
	if len(f.pkts) < f.max {
		return len(f.pkts)
	}
	old := f.now().Add(-inflightExpiry)
	for k, t := range f.pkts {
		if t.Before(old) {
			delete(f.pkts, k)
		}
	}
	return len(f.pkts)
}

func (f *inflight) enter(bufs [][]byte) {
	now := f.now()
	f.mu.Lock()
	for _, b := range bufs {
		if cap(b) > 0 {
			f.pkts[bufferKey(b)] = now
		}
	}
	f.mu.Unlock()
}

func (f *inflight) leave(bufs [][]byte) {
	f.mu.Lock()
	left := false
	for _, b := range bufs {
		if cap(b) == 0 {
			continue
		}
		if _, ok := f.pkts[bufferKey(b)]; ok {
			delete(f.pkts, bufferKey(b))
			left = true
		}
	}
	f.mu.Unlock()
	if left {
		select {
		case f.room <- struct{}{}:
		default:
		}
	}
}

func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pkts)
}

func (f *inflight) close() { f.once.Do(func() { close(f.done) }) }

// limitedTUN is wg0's TUN device with the outbound count taken at Read and
// the inbound one given back at Write.
type limitedTUN struct {
	tun.Device
	out, in *inflight
}

func (t limitedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.out.admit()
	n, err := t.Device.Read(bufs, sizes, offset)
	if n > 0 {
		t.out.enter(bufs[:n])
	}
	return n, err
}

func (t limitedTUN) Write(bufs [][]byte, offset int) (int, error) {
	t.in.leave(bufs)
	return t.Device.Write(bufs, offset)
}

func (t limitedTUN) Close() error {
	t.out.close()
	t.in.close()
	return t.Device.Close()
}

// limitedBind is the UDP bind with the outbound count given back at Send
// and the inbound one taken at each receive.
// received are the buffers of a batch that hold a datagram for
// wireguard-go: the mesh (mesh.go) leaves what it forwarded, or took for
// itself, with size 0.
func received(bufs [][]byte, sizes []int) [][]byte {
	for i := range bufs {
		if sizes[i] == 0 {
			out := make([][]byte, 0, len(bufs))
			for j := range bufs {
				if sizes[j] > 0 {
					out = append(out, bufs[j])
				}
			}
			return out
		}
	}
	return bufs
}

type limitedBind struct {
	conn.Bind
	out, in *inflight
}

func (b *limitedBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.out.leave(bufs)
	return b.Bind.Send(bufs, ep)
}

func (b *limitedBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return fns, actual, err
	}
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			b.in.admit()
			n, err := fn(bufs, sizes, eps)
			if n > 0 {
				b.in.enter(received(bufs[:n], sizes[:n]))
			}
			return n, err
		}
	}
	return out, actual, nil
}
