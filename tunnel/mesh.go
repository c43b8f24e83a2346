package tunnel

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/probe"
	"github.com/wgk3s/wgk3s/relay"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Mesh is what the userspace data path adds on WireGuard's UDP port: the
// relay for other nodes' ciphertext (package relay) and the probes
// (package probe). It lives as long as the Tunnel, across recreations of
// the device; in kernel mode there is none (the kernel owns the port).
type Mesh struct {
	Router *relay.Router
	Prober *probe.Prober

	mu   sync.Mutex
	bind *meshBind // the current device's
	// sent and received are when a datagram last went to, and came from,
	// each address (Activity).
	sent, received map[netip.AddrPort]time.Time
}

func newMesh(private wgtypes.Key) *Mesh {
	m := &Mesh{Router: relay.New(private.PublicKey(), nil), sent: map[netip.AddrPort]time.Time{}, received: map[netip.AddrPort]time.Time{}}
	m.Prober = probe.NewProber(private, m.send, nil)
	return m
}

// Activity says when a datagram last went to addr and came from it.
func (m *Mesh) Activity(addr netip.AddrPort) (sent, received time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent[addr], m.received[addr]
}

// send puts a datagram on WireGuard's socket (a probe message).
func (m *Mesh) send(pkt []byte, to netip.AddrPort) error {
	m.mu.Lock()
	b := m.bind
	m.mu.Unlock()
	if b == nil {
		return net.ErrClosed
	}
	return b.sendTo([][]byte{pkt}, to)
}

// meshBind wraps wireguard-go's bind: what the relay forwards and the
// probes for this node never reach wireguard-go.
type meshBind struct {
	conn.Bind
	m *Mesh

	mu  sync.Mutex
	eps map[netip.AddrPort]conn.Endpoint
}

func newMeshBind(inner conn.Bind, m *Mesh) *meshBind {
	b := &meshBind{Bind: inner, m: m, eps: map[netip.AddrPort]conn.Endpoint{}}
	m.mu.Lock()
	m.bind = b
	m.mu.Unlock()
	return b
}

// Open wraps each receive function: a datagram the router forwards is
// sent on and a probe message for this node handed to the prober; both
// leave the batch with size 0, which wireguard-go skips.
func (b *meshBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return fns, actual, err
	}
	out := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = b.wrap(fn)
	}
	return out, actual, nil
}

func (b *meshBind) wrap(fn conn.ReceiveFunc) conn.ReceiveFunc {
	// Scratch for one receive function's batches (each runs on its own
	// goroutine): no allocation per batch.
	var (
		pkts []([]byte)
		srcs []netip.AddrPort
		ds   []relay.Decision
		out  forwards
	)
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		if n == 0 {
			return n, err
		}
		pkts, srcs, ds = grow(pkts, n), growAddrs(srcs, n), growDecisions(ds, n)
		self := b.self()
		b.note(eps[:n], srcs)
		for i := range n {
			pkts[i] = bufs[i][:sizes[i]]
			if to, ok := probe.Destination(pkts[i]); ok && to == self {
				b.m.Prober.Receive(pkts[i], srcs[i])
				sizes[i], pkts[i] = 0, nil
			}
		}
		b.m.Router.RouteBatch(pkts[:n], srcs[:n], ds[:n])
		out.reset()
		for i := range n {
			switch ds[i].Action {
			case relay.Forward:
				out.add(ds[i].To, pkts[i])
				sizes[i] = 0
			case relay.Drop:
				sizes[i] = 0
			}
		}
		for i := range out.to {
			b.sendTo(out.pkts[i], out.to[i])
		}
		return n, err
	}
}

// note records where a batch came from, once per source.
func (b *meshBind) note(eps []conn.Endpoint, srcs []netip.AddrPort) {
	now := time.Now()
	var last netip.AddrPort
	for i, ep := range eps {
		srcs[i] = addrOf(ep)
		if srcs[i] != last {
			b.m.noteReceived(srcs[i], now)
			last = srcs[i]
		}
	}
}

// forwards groups a batch's forwarded datagrams by destination.
type forwards struct {
	to   []netip.AddrPort
	pkts [][][]byte
}

func (f *forwards) reset() {
	f.to = f.to[:0]
	for i := range f.pkts {
		f.pkts[i] = f.pkts[i][:0]
	}
}

func (f *forwards) add(to netip.AddrPort, pkt []byte) {
	for i, t := range f.to {
		if t == to {
			f.pkts[i] = append(f.pkts[i], pkt)
			return
		}
	}
	f.to = append(f.to, to)
	if len(f.pkts) < len(f.to) {
		f.pkts = append(f.pkts, nil)
	}
	i := len(f.to) - 1
	f.pkts[i] = append(f.pkts[i][:0], pkt)
}

func grow(s [][]byte, n int) [][]byte {
	if cap(s) < n {
		return make([][]byte, n)
	}
	return s[:n]
}

func growAddrs(s []netip.AddrPort, n int) []netip.AddrPort {
	if cap(s) < n {
		return make([]netip.AddrPort, n)
	}
	return s[:n]
}

func growDecisions(s []relay.Decision, n int) []relay.Decision {
	if cap(s) < n {
		return make([]relay.Decision, n)
	}
	return s[:n]
}

func (b *meshBind) self() wgtypes.Key { return b.m.Router.Self() }

// Send notes where wireguard-go sends to.
func (b *meshBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.m.noteSent(addrOf(ep), time.Now())
	return b.Bind.Send(bufs, ep)
}

// sendTo sends datagrams to an address, on the bind's socket.
func (b *meshBind) sendTo(pkts [][]byte, to netip.AddrPort) error {
	b.mu.Lock()
	ep, ok := b.eps[to]
	if !ok {
		var err error
		if ep, err = b.Bind.ParseEndpoint(to.String()); err != nil {
			b.mu.Unlock()
			return err
		}
		if len(b.eps) > 4096 {
			b.eps = map[netip.AddrPort]conn.Endpoint{}
		}
		b.eps[to] = ep
	}
	b.mu.Unlock()
	return b.Bind.Send(pkts, ep)
}

func addrOf(ep conn.Endpoint) netip.AddrPort {
	if e, ok := ep.(*conn.StdNetEndpoint); ok {
		return netip.AddrPortFrom(e.Addr().Unmap(), e.Port())
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (m *Mesh) noteReceived(a netip.AddrPort, now time.Time) {
	m.mu.Lock()
	if len(m.received) > 8192 {
		m.received = map[netip.AddrPort]time.Time{}
	}
	m.received[a] = now
	m.mu.Unlock()
}

func (m *Mesh) noteSent(a netip.AddrPort, now time.Time) {
	m.mu.Lock()
	if len(m.sent) > 8192 {
		m.sent = map[netip.AddrPort]time.Time{}
	}
	m.sent[a] = now
	m.mu.Unlock()
}

// Ping sends a probe ping to peer at at (see probe.Prober.Ping).
func (m *Mesh) Ping(peer wgtypes.Key, at netip.AddrPort) error { return m.Prober.Ping(peer, at) }
