package relay

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// memNet is an in-memory UDP network: each bind has an address; a
// datagram sent to the relay's address goes through its Router, which
// forwards it or hands it to the relay's own bind.
type memNet struct {
	mu      sync.Mutex
	binds   map[netip.AddrPort]*memBind
	relay   netip.AddrPort
	router  *Router
	seen    [][]byte // every datagram the relay forwarded, as it forwarded it
	dropped int
}

func newMemNet() *memNet { return &memNet{binds: map[netip.AddrPort]*memBind{}} }

func (n *memNet) deliver(from, to netip.AddrPort, pkt []byte) {
	n.mu.Lock()
	if to == n.relay && n.router != nil {
		d := n.router.Route(pkt, from)
		switch d.Action {
		case Forward:
			n.seen = append(n.seen, append([]byte(nil), pkt...))
			from, to = n.relay, d.To
		case Drop:
			n.dropped++
			n.mu.Unlock()
			return
		}
	}
	b := n.binds[to]
	n.mu.Unlock()
	if b == nil {
		return
	}
	select {
	case b.in <- datagram{append([]byte(nil), pkt...), from}:
	default: // a full queue drops, as a network would
	}
}

type datagram struct {
	pkt  []byte
	from netip.AddrPort
}

// memBind is a conn.Bind on memNet.
type memBind struct {
	net    *memNet
	addr   netip.AddrPort
	in     chan datagram
	closed chan struct{}
	once   sync.Once
}

func (n *memNet) bind(addr string) *memBind {
	b := &memBind{net: n, addr: netip.MustParseAddrPort(addr), in: make(chan datagram, 1024), closed: make(chan struct{})}
	n.mu.Lock()
	n.binds[b.addr] = b
	n.mu.Unlock()
	return b
}

func (b *memBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.closed = make(chan struct{})
	b.once = sync.Once{}
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case d := <-b.in:
			sizes[0] = copy(bufs[0], d.pkt)
			eps[0] = &conn.StdNetEndpoint{AddrPort: d.from}
			return 1, nil
		case <-b.closed:
			return 0, net.ErrClosed
		}
	}
	return []conn.ReceiveFunc{recv}, b.addr.Port(), nil
}

func (b *memBind) Close() error         { b.once.Do(func() { close(b.closed) }); return nil }
func (b *memBind) SetMark(uint32) error { return nil }
func (b *memBind) BatchSize() int       { return 1 }
func (b *memBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	return &conn.StdNetEndpoint{AddrPort: ap}, err
}

func (b *memBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	to := ep.(*conn.StdNetEndpoint).AddrPort
	for _, buf := range bufs {
		b.net.deliver(b.addr, to, buf)
	}
	return nil
}

// wgNode is a wireguard-go device on memNet with a TUN of channels.
type wgNode struct {
	key  wgtypes.Key
	addr netip.AddrPort
	ip   netip.Addr
	tun  *tuntest.ChannelTUN
	dev  *device.Device
}

func newWGNode(t *testing.T, n *memNet, addr, ip string) *wgNode {
	t.Helper()
	k, _ := wgtypes.GeneratePrivateKey()
	w := &wgNode{key: k, addr: netip.MustParseAddrPort(addr), ip: netip.MustParseAddr(ip), tun: tuntest.NewChannelTUN()}
	w.dev = device.NewDevice(w.tun.TUN(), n.bind(addr), device.NewLogger(device.LogLevelError, ""))
	if err := w.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(k[:]), w.addr.Port())); err != nil {
		t.Fatal(err)
	}
	if err := w.dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.dev.Close)
	return w
}

// peer adds p as w's peer, reached at endpoint.
func (w *wgNode) peer(t *testing.T, p *wgNode, endpoint netip.AddrPort) {
	t.Helper()
	pub := p.key.PublicKey()
	cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n", hex.EncodeToString(pub[:]), endpoint, p.ip)
	if err := w.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

// ping sends an ICMP echo from w to p's address and waits for it to come
// out of p's TUN.
func (w *wgNode) ping(t *testing.T, p *wgNode) bool {
	t.Helper()
	w.tun.Outbound <- tuntest.Ping(p.ip, w.ip)
	select {
	case got := <-p.tun.Inbound:
		return len(got) > 0
	case <-time.After(5 * time.Second):
		return false
	}
}
