package meshsync

import (
	"net"
	"net/netip"
	"sync"
)

// limitListener closes, at accept, a connection beyond perAddr open ones
// from its address or beyond total() open ones in all, so that one node
// (or a process on it) cannot make the master hold an unbounded number of
// sockets. A refused connection costs an accept and a close.
func limitListener(l net.Listener, perAddr int, total func() int) net.Listener {
	return &limited{Listener: l, perAddr: perAddr, total: total, open: map[netip.Addr]int{}}
}

type limited struct {
	net.Listener
	perAddr int
	total   func() int

	mu   sync.Mutex
	open map[netip.Addr]int
	all  int
}

func (l *limited) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteAddr(c)
		if l.admit(addr) {
			return &limitedConn{Conn: c, release: func() { l.release(addr) }}, nil
		}
		c.Close()
	}
}

func (l *limited) admit(addr netip.Addr) bool {
	total := l.total()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[addr] >= l.perAddr || l.all >= total {
		return false
	}
	l.open[addr]++
	l.all++
	return true
}

func (l *limited) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[addr]--; l.open[addr] <= 0 {
		delete(l.open, addr)
	}
	l.all--
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
