package paths

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeDevice is the tunnel as the manager sees it: peers whose counters
// and endpoints the test moves, and what the manager set and probed.
type fakeDevice struct {
	mu         sync.Mutex
	peers      map[wgtypes.Key]*wgtypes.Peer
	configured map[wgtypes.Key]netip.AddrPort
	paths      map[wgtypes.Key]tunnel.Path
	handshakes [][]wgtypes.Key
}

func (d *fakeDevice) Device() (*wgtypes.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := &wgtypes.Device{}
	for _, p := range d.peers {
		dev.Peers = append(dev.Peers, *p)
	}
	return dev, nil
}

func (d *fakeDevice) SetPaths(p map[wgtypes.Key]tunnel.Path) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paths = p
	return nil
}

func (d *fakeDevice) Probe(keys []wgtypes.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handshakes = append(d.handshakes, keys)
	return nil
}

func (d *fakeDevice) Renew(keys []wgtypes.Key) error { return d.Probe(keys) }

func (d *fakeDevice) Configured() map[wgtypes.Key]netip.AddrPort { return d.configured }

func (d *fakeDevice) roam(k wgtypes.Key, ap netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers[k].Endpoint = net.UDPAddrFromAddrPort(ap)
}

// fakeProber answers pings from a table of which addresses answer, and
// reports the traffic the test says there is.
type fakeProber struct {
	mu       sync.Mutex
	m        *Manager
	clock    *clock
	answers  map[netip.AddrPort]bool // an address that answers pings (for any key)
	rtt      map[netip.AddrPort]time.Duration
	sent     map[netip.AddrPort]time.Time
	received map[netip.AddrPort]time.Time
	pings    []netip.AddrPort
	queued   []func() // pongs, delivered after the tick (the manager holds its lock in one)
}

func (f *fakeProber) Ping(peer wgtypes.Key, at netip.AddrPort) error {
	f.mu.Lock()
	f.pings = append(f.pings, at)
	ok, rtt := f.answers[at], f.rtt[at]
	f.mu.Unlock()
	if ok {
		f.mu.Lock()
		f.queued = append(f.queued, func() { f.m.Pong(peer, at, rtt) })
		f.mu.Unlock()
	}
	return nil
}

// deliver hands the manager the pongs to the pings of the last tick.
func (f *fakeProber) deliver() {
	f.mu.Lock()
	q := f.queued
	f.queued = nil
	f.mu.Unlock()
	for _, pong := range q {
		pong()
	}
}

func (f *fakeProber) Activity(addr netip.AddrPort) (time.Time, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent[addr], f.received[addr]
}

func (f *fakeProber) traffic(addr netip.AddrPort, sent, received bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sent {
		f.sent[addr] = f.clock.now()
	}
	if received {
		f.received[addr] = f.clock.now()
	}
}

func (f *fakeProber) answer(addr netip.AddrPort, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[addr] = ok
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rig is a home node (self) with two relays (master, server) and two
// peers: cloud (with an endpoint) and home2 (without).
type rig struct {
	t                                  *testing.T
	dev                                *fakeDevice
	pr                                 *fakeProber
	m                                  *Manager
	clk                                *clock
	self, master, server, cloud, home2 wgtypes.Key
	addr                               map[wgtypes.Key]netip.AddrPort
}

// keys returns n public keys, sorted.
func keys(t *testing.T, n int) []wgtypes.Key {
	var out []wgtypes.Key
	for range n {
		k, _ := wgtypes.GeneratePrivateKey()
		out = append(out, k.PublicKey())
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if bytes.Compare(out[j][:], out[i][:]) < 0 {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// newRig: leader says whether self is the leader of its pairs (the lowest
// key).
func newRig(t *testing.T, leader bool) *rig {
	ks := keys(t, 5)
	r := &rig{t: t, clk: &clock{t: time.Unix(1_800_000_000, 0)}}
	if leader {
		r.self, r.master, r.server, r.cloud, r.home2 = ks[0], ks[1], ks[2], ks[3], ks[4]
	} else {
		r.self, r.master, r.server, r.cloud, r.home2 = ks[4], ks[0], ks[1], ks[2], ks[3]
	}
	r.addr = map[wgtypes.Key]netip.AddrPort{
		r.master: netip.MustParseAddrPort("203.0.113.10:5418"),
		r.server: netip.MustParseAddrPort("203.0.113.20:5418"),
		r.cloud:  netip.MustParseAddrPort("203.0.113.30:5418"),
	}
	r.dev = &fakeDevice{peers: map[wgtypes.Key]*wgtypes.Peer{}, configured: map[wgtypes.Key]netip.AddrPort{}}
	for _, k := range []wgtypes.Key{r.master, r.server, r.cloud, r.home2} {
		r.dev.peers[k] = &wgtypes.Peer{PublicKey: k}
		if a, ok := r.addr[k]; ok {
			r.dev.configured[k] = a
			r.dev.peers[k].Endpoint = net.UDPAddrFromAddrPort(a)
		}
	}
	r.pr = &fakeProber{clock: r.clk, answers: map[netip.AddrPort]bool{}, rtt: map[netip.AddrPort]time.Duration{},
		sent: map[netip.AddrPort]time.Time{}, received: map[netip.AddrPort]time.Time{}}
	r.m = New(r.dev, Options{Now: r.clk.now, Prober: r.pr})
	r.pr.m = r.m
	r.m.SetConfig(Config{Self: r.self, Keepalive: 5 * time.Second, Peers: []Peer{
		{Name: "master", Key: r.master, Configured: true},
		{Name: "server", Key: r.server, Configured: true},
		{Name: "cloud", Key: r.cloud, Configured: true},
		{Name: "home2", Key: r.home2},
	}})
	// The relays answer, the master faster.
	r.pr.answer(r.addr[r.master], true)
	r.pr.answer(r.addr[r.server], true)
	r.pr.rtt[r.addr[r.master]] = 20 * time.Millisecond
	r.pr.rtt[r.addr[r.server]] = 5 * time.Millisecond
	return r
}

// tick advances the clock by d and ticks; the pongs arrive after it.
func (r *rig) tick(d time.Duration) {
	r.clk.advance(d)
	r.m.Tick()
	r.pr.deliver()
}

func (r *rig) path(k wgtypes.Key) tunnel.Path {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	return r.dev.paths[k]
}

func (r *rig) handshakes(k wgtypes.Key) int {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	n := 0
	for _, ks := range r.dev.handshakes {
		for _, x := range ks {
			if x == k {
				n++
			}
		}
	}
	return n
}

// TestAPeerWithNoAddressIsRelayedThroughTheNearestRelay: home2 has no
// endpoint and none is learned: it is relayed through the relay with the
// shortest round trip (the server), and a handshake starts that way.
func TestAPeerWithNoAddressIsRelayedThroughTheNearestRelay(t *testing.T) {
	r := newRig(t, true)
	r.tick(0) // the relays are pinged
	r.tick(time.Second)
	if p := r.path(r.home2); p.Via != r.server {
		t.Fatalf("home2 = %+v, want relayed via the server (5 ms against 20)", p)
	}
	if r.handshakes(r.home2) == 0 {
		t.Error("no handshake started on the new path")
	}
	if st := r.m.Status()[r.home2]; !st.Relayed || st.Via != "server" {
		t.Errorf("status %+v", st)
	}
}

// TestADirectPathThatDiesUnderTrafficIsRelayedInUnderTwoSeconds: cloud
// is direct; traffic goes to it and nothing comes back: its address is
// pinged, does not answer, and within two seconds it is relayed.
func TestADirectPathThatDiesUnderTrafficIsRelayedInUnderTwoSeconds(t *testing.T) {
	r := newRig(t, true)
	ca := r.addr[r.cloud]
	for range 4 { // healthy: traffic both ways
		r.pr.traffic(ca, true, true)
		r.tick(fastEvery)
	}
	if r.path(r.cloud).Relayed() {
		t.Fatal("cloud relayed while it answers")
	}
	r.pr.answer(ca, false) // the path breaks
	began := r.clk.now()
	for r.clk.now().Sub(began) < 3*time.Second && !r.path(r.cloud).Relayed() {
		r.pr.traffic(ca, true, false)
		r.tick(fastEvery)
	}
	took := r.clk.now().Sub(began)
	if p := r.path(r.cloud); p.Via != r.server {
		t.Fatalf("cloud = %+v after %s, want relayed via the server", p, took)
	}
	if took > 2*time.Second {
		t.Errorf("relayed %s after the path broke, want within 2 s", took)
	}
	t.Logf("relayed %s after the path broke (ticks of %s)", took, fastEvery)
}

// TestARelayedPeerGoesDirectWhenItAnswers: a relayed peer's direct
// address is pinged every two seconds; once it answers, it is direct.
func TestARelayedPeerGoesDirectWhenItAnswers(t *testing.T) {
	r := newRig(t, true)
	ca := r.addr[r.cloud]
	r.tick(0)
	r.pr.traffic(ca, true, false)
	for i := 0; i < 20 && !r.path(r.cloud).Relayed(); i++ {
		r.pr.traffic(ca, true, false)
		r.tick(fastEvery)
	}
	if !r.path(r.cloud).Relayed() {
		t.Fatal("cloud not relayed")
	}
	r.pr.answer(ca, true) // the path opens
	began := r.clk.now()
	for r.clk.now().Sub(began) < 6*time.Second && r.path(r.cloud).Relayed() {
		r.tick(fastEvery)
	}
	if took := r.clk.now().Sub(began); r.path(r.cloud).Relayed() || took > 5*time.Second {
		t.Errorf("cloud still relayed, or direct only %s after its path opened (want within 5 s)", took)
	}
}

// TestADeadRelayIsReplaced: the leader moves home2 to the other relay
// within relayDead and a ping round; a follower waits leaderWait for the
// leader's handshake first.
func TestADeadRelayIsReplaced(t *testing.T) {
	for _, leader := range []bool{true, false} {
		r := newRig(t, leader)
		for range 3 {
			r.tick(time.Second)
		}
		if r.path(r.home2).Via != r.server {
			t.Fatalf("home2 = %+v", r.path(r.home2))
		}
		r.pr.answer(r.addr[r.server], false) // the server's cloud goes away
		began := r.clk.now()
		for r.clk.now().Sub(began) < 6*time.Second && r.path(r.home2).Via == r.server {
			r.tick(fastEvery)
		}
		took := r.clk.now().Sub(began)
		if r.path(r.home2).Via != r.master {
			t.Fatalf("leader %v: home2 = %+v", leader, r.path(r.home2))
		}
		limit := 2500 * time.Millisecond
		if !leader {
			limit += leaderWait
		}
		if took > limit {
			t.Errorf("leader %v: moved to the other relay %s after the first one died, want within %s", leader, took, limit)
		}
		t.Logf("leader %v: moved %s after the relay died", leader, took)
	}
}

// TestTheOtherEndsChoiceIsAdopted: home2's datagrams come through the
// master (the other end chose it and made its handshake there): this node
// follows, with no handshake of its own.
func TestTheOtherEndsChoiceIsAdopted(t *testing.T) {
	r := newRig(t, false)
	for range 3 {
		r.tick(time.Second)
	}
	before := r.handshakes(r.home2)
	r.dev.roam(r.home2, r.addr[r.master])
	r.tick(fastEvery)
	if r.path(r.home2).Via != r.master {
		t.Fatalf("home2 = %+v, want the master the other end chose", r.path(r.home2))
	}
	if r.handshakes(r.home2) != before {
		t.Error("a handshake for an adopted path")
	}
}

// TestADownPeerIsNotReachableThroughItsRelay: reachable means something
// came back from the peer itself recently; the relay's answers do not
// make it so.
func TestADownPeerIsNotReachableThroughItsRelay(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	if !Reachable(now.Add(-10*time.Second), now, 25*time.Second) || Reachable(now.Add(-60*time.Second), now, 25*time.Second) {
		t.Error("the window is not two keepalives and 5 s")
	}
	if !Reachable(now.Add(-100*time.Second), now, 0) || Reachable(now.Add(-200*time.Second), now, 0) {
		t.Error("without keepalives, the window is not 180 s")
	}
	r := newRig(t, true)
	for range 3 {
		r.tick(time.Second)
	}
	for range 15 { // home2 is silent; the relays answer
		r.tick(time.Second)
	}
	if st := r.m.Status()[r.home2]; Reachable(st.Heard, r.clk.now(), 5*time.Second) {
		t.Errorf("home2, silent, is reachable: %+v", st)
	}
}

// TestWithoutAProber (kernel mode): a peer nothing came from is relayed
// through the first live relay in the file.
func TestWithoutAProber(t *testing.T) {
	r := newRig(t, true)
	r.m.opts.Prober = nil
	r.dev.peers[r.master].ReceiveBytes = 100
	r.dev.peers[r.master].LastHandshakeTime = r.clk.now()
	r.tick(0)
	r.dev.peers[r.master].ReceiveBytes = 200 // the master's keepalives keep coming
	r.tick(unanswered + time.Second)
	if p := r.path(r.home2); p.Via != r.master {
		t.Errorf("home2 = %+v, want relayed via the master, the first relay that answers", p)
	}
}
