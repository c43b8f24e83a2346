package paths

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeDevice is the tunnel as the manager sees it: peers whose counters
// the test moves, and a record of what the manager set and probed.
type fakeDevice struct {
	mu     sync.Mutex
	peers  map[wgtypes.Key]*wgtypes.Peer
	paths  map[wgtypes.Key]tunnel.Path
	probes [][]wgtypes.Key
	sets   int
	fail   error
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
	if d.fail != nil {
		return d.fail
	}
	d.sets++
	d.paths = p
	return nil
}

func (d *fakeDevice) Probe(keys []wgtypes.Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.probes = append(d.probes, keys)
	return nil
}

func (d *fakeDevice) hear(k wgtypes.Key, bytes int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers[k].ReceiveBytes += bytes
}

func (d *fakeDevice) at(k wgtypes.Key, ep string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers[k].Endpoint = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ep))
}

func newKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// rig is an agent with the master, a cloud node and a home node.
type rig struct {
	dev                  *fakeDevice
	m                    *Manager
	clk                  *clock
	master, cloud, home  wgtypes.Key
	keepalive, probeEach time.Duration
}

func newRig(t *testing.T) *rig {
	r := &rig{clk: &clock{t: time.Unix(1_800_000_000, 0)}, master: newKey(t), cloud: newKey(t), home: newKey(t),
		keepalive: 25 * time.Second, probeEach: time.Minute}
	r.dev = &fakeDevice{peers: map[wgtypes.Key]*wgtypes.Peer{}}
	for _, k := range []wgtypes.Key{r.master, r.cloud, r.home} {
		r.dev.peers[k] = &wgtypes.Peer{PublicKey: k}
	}
	r.m = New(r.dev, Options{Now: r.clk.now, ProbeEvery: r.probeEach})
	r.m.SetPeers(Set{Relay: r.master, RelayName: "master", Keepalive: r.keepalive, Peers: []Peer{
		{Name: "master", Key: r.master, Configured: true},
		{Name: "cloud", Key: r.cloud, Configured: true},
		{Name: "home", Key: r.home},
	}})
	return r
}

func (r *rig) path(k wgtypes.Key) tunnel.Path {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	return r.dev.paths[k]
}

func TestPeersHeardFromStayDirectOthersAreRelayed(t *testing.T) {
	r := newRig(t)
	r.dev.hear(r.cloud, 92) // a handshake came back
	r.m.Tick()
	if p := r.path(r.cloud); p.Relayed() {
		t.Errorf("cloud, heard from, is relayed: %+v", p)
	}
	if p := r.path(r.home); p.Via != r.master {
		t.Errorf("home, never heard from, = %+v, want relayed via the master", p)
	}
	if _, ok := r.dev.paths[r.master]; ok {
		t.Error("the master has a path: it is always reached directly")
	}
	st := r.m.Status()
	if !st[r.home].Relayed || st[r.home].Via != "master" || st[r.cloud].Relayed {
		t.Errorf("status = %+v", st)
	}
}

func TestARelayedPeerGoesDirectWhenHeardAndBackWhenSilent(t *testing.T) {
	r := newRig(t)
	r.m.Tick()
	if !r.path(r.home).Relayed() {
		t.Fatal("home not relayed at first")
	}
	r.clk.advance(3 * time.Second)
	r.dev.hear(r.home, 32) // its keepalive came in directly
	r.m.Tick()
	if r.path(r.home).Relayed() {
		t.Fatal("home still relayed after a direct keepalive")
	}
	// Keepalives keep coming: it stays direct well past the window.
	for range 10 {
		r.clk.advance(r.keepalive)
		r.dev.hear(r.home, 32)
		r.m.Tick()
		if r.path(r.home).Relayed() {
			t.Fatal("a peer sending keepalives was relayed")
		}
	}
	// Silence for two keepalives and the slack: relayed.
	r.clk.advance(2*r.keepalive + 4*time.Second)
	r.m.Tick()
	if r.path(r.home).Relayed() {
		t.Fatal("relayed before the window ended")
	}
	r.clk.advance(2 * time.Second)
	r.m.Tick()
	if r.path(r.home).Via != r.master {
		t.Fatal("a silent peer stays direct")
	}
}

func TestHandshakeTimeCountsAsHeard(t *testing.T) {
	r := newRig(t)
	r.dev.mu.Lock()
	r.dev.peers[r.home].LastHandshakeTime = r.clk.t.Add(-time.Second)
	r.dev.mu.Unlock()
	r.m.Tick()
	if r.path(r.home).Relayed() {
		t.Error("a peer that just handshook is relayed")
	}
	r2 := newRig(t)
	r2.dev.mu.Lock()
	r2.dev.peers[r2.home].LastHandshakeTime = r2.clk.t.Add(-10 * time.Minute)
	r2.dev.mu.Unlock()
	r2.m.Tick()
	if !r2.path(r2.home).Relayed() {
		t.Error("a handshake 10 minutes old made the peer direct")
	}
}

func TestLearnedEndpointIsUsedAndProbed(t *testing.T) {
	r := newRig(t)
	homeProbes := func() int {
		n := 0
		for _, keys := range r.dev.probes {
			for _, k := range keys {
				if k == r.home {
					n++
				}
			}
		}
		return n
	}
	r.m.Tick() // relayed, with no endpoint to probe at yet (the tunnel skips it)
	before := homeProbes()
	learned := netip.MustParseAddrPort("203.0.113.44:40000")
	r.m.SetLearned(map[wgtypes.Key]netip.AddrPort{r.home: learned, r.cloud: netip.MustParseAddrPort("203.0.113.1:1")})
	r.clk.advance(time.Second)
	r.m.Tick()
	if got := r.path(r.home); got.Endpoint != learned || got.Via != r.master {
		t.Errorf("home = %+v, want relayed at the learned endpoint", got)
	}
	if got := r.path(r.cloud); got.Endpoint.IsValid() {
		t.Errorf("cloud got a learned endpoint %v though the file gives one", got.Endpoint)
	}
	if homeProbes() != before+1 {
		t.Errorf("home probed %d times after a new endpoint, want once at once", homeProbes()-before)
	}
	// No new probe until ProbeEvery has passed.
	r.clk.advance(r.probeEach - time.Second)
	r.m.Tick()
	if homeProbes() != before+1 {
		t.Errorf("probed again after %s", r.probeEach-time.Second)
	}
	r.clk.advance(time.Second)
	r.m.Tick()
	if homeProbes() != before+2 {
		t.Errorf("not probed again after %s", r.probeEach)
	}
	// The master restarts and lists nobody yet: the endpoint stays.
	r.m.SetLearned(map[wgtypes.Key]netip.AddrPort{})
	r.m.Tick()
	if got := r.path(r.home).Endpoint; got != learned {
		t.Errorf("an empty list from the master dropped the learned endpoint: %v", got)
	}
}

func TestALivePeerKeepsTheEndpointItRoamedTo(t *testing.T) {
	r := newRig(t)
	learned := netip.MustParseAddrPort("203.0.113.44:40000")
	r.m.SetLearned(map[wgtypes.Key]netip.AddrPort{r.home: learned})
	r.dev.hear(r.home, 32)
	r.m.Tick()
	// WireGuard roamed to another port (a NAT that maps per destination).
	r.dev.at(r.home, "203.0.113.44:51000")
	r.m.SetLearned(map[wgtypes.Key]netip.AddrPort{r.home: netip.MustParseAddrPort("203.0.113.44:40001")})
	r.dev.hear(r.home, 32)
	r.m.Tick()
	if got := r.path(r.home); got.Endpoint != learned || got.Relayed() {
		t.Errorf("home = %+v: a live, roamed path was moved to a new learned endpoint", got)
	}
	// But a live peer still at the learned endpoint follows it when it
	// moves: its home router's address changed.
	r.dev.at(r.home, learned.String())
	moved := netip.MustParseAddrPort("198.51.100.77:40000")
	r.m.SetLearned(map[wgtypes.Key]netip.AddrPort{r.home: moved})
	r.m.Tick()
	if got := r.path(r.home).Endpoint; got != moved {
		t.Errorf("home at %v, want the new learned %v", got, moved)
	}
}

func TestNoKeepaliveNoRelay(t *testing.T) {
	r := newRig(t)
	r.m.SetPeers(Set{Relay: r.master, RelayName: "master", Peers: []Peer{{Name: "home", Key: r.home}}})
	r.m.Tick()
	if r.path(r.home).Relayed() {
		t.Error("relayed with keepalive 0: a quiet direct path would look dead")
	}
}

func TestAFailedSetIsRetried(t *testing.T) {
	r := newRig(t)
	r.dev.fail = errors.New("device busy")
	r.m.Tick()
	r.dev.fail = nil
	r.m.Tick()
	if !r.path(r.home).Relayed() {
		t.Error("the paths were not set again after a failure")
	}
	sets := r.dev.sets
	r.m.Tick()
	if r.dev.sets != sets {
		t.Error("an unchanged path was set again")
	}
}

func TestTheMasterReportsWhereNodesAreSeen(t *testing.T) {
	dev := &fakeDevice{peers: map[wgtypes.Key]*wgtypes.Peer{}}
	a, b := newKey(t), newKey(t)
	dev.peers[a] = &wgtypes.Peer{PublicKey: a}
	dev.peers[b] = &wgtypes.Peer{PublicKey: b}
	var got []map[wgtypes.Key]netip.AddrPort
	m := New(dev, Options{Observed: func(eps map[wgtypes.Key]netip.AddrPort) { got = append(got, eps) }})
	m.SetPeers(Set{Keepalive: 25 * time.Second, Peers: []Peer{{Name: "a", Key: a}, {Name: "b", Key: b}}})
	dev.at(a, "203.0.113.44:40000")
	m.Tick()
	m.Tick()
	if len(got) != 1 || got[0][a] != netip.MustParseAddrPort("203.0.113.44:40000") || len(got[0]) != 1 {
		t.Fatalf("observed = %v, want a's endpoint once", got)
	}
	dev.at(a, "198.51.100.77:40000")
	m.Tick()
	if len(got) != 2 || got[1][a] != netip.MustParseAddrPort("198.51.100.77:40000") {
		t.Fatalf("observed after a moved = %v", got)
	}
	if dev.sets != 0 {
		t.Error("the master set paths: it relays and decides nothing")
	}
}

// TestAPathInUseThatBreaksIsRelayedIn15s: data sent and nothing back for
// 15 s means the direct path is dead, long before the keepalive window.
func TestAPathInUseThatBreaksIsRelayedIn15s(t *testing.T) {
	r := newRig(t)
	send := func(n int64) {
		r.dev.mu.Lock()
		r.dev.peers[r.home].TransmitBytes += n
		r.dev.mu.Unlock()
	}
	r.dev.hear(r.home, 32)
	r.m.Tick()
	// Our own keepalives alone are no question: no answer is due.
	for range 3 {
		r.clk.advance(5 * time.Second)
		send(32)
		r.m.Tick()
	}
	if r.path(r.home).Relayed() {
		t.Fatal("relayed after 15 s of our keepalives only, within the keepalive window")
	}
	// Data goes out, answers come back: live.
	r.clk.advance(time.Second)
	r.dev.hear(r.home, 32)
	send(1400)
	r.m.Tick()
	for range 3 {
		r.clk.advance(5 * time.Second)
		send(1400)
		r.dev.hear(r.home, 100)
		r.m.Tick()
	}
	if r.path(r.home).Relayed() {
		t.Fatal("a peer answering data was relayed")
	}
	// The path breaks: data goes out, nothing comes back.
	r.clk.advance(time.Second)
	send(1400)
	r.m.Tick()
	r.clk.advance(14 * time.Second)
	send(1400)
	r.m.Tick()
	if r.path(r.home).Relayed() {
		t.Fatal("relayed 14 s after data went unanswered")
	}
	r.clk.advance(time.Second)
	r.m.Tick()
	if !r.path(r.home).Relayed() {
		t.Fatal("data unanswered for 15 s, still direct")
	}
	// Something comes back directly: direct again.
	r.clk.advance(time.Second)
	r.dev.hear(r.home, 32)
	r.m.Tick()
	if r.path(r.home).Relayed() {
		t.Fatal("still relayed after the peer was heard directly")
	}
}

// TestADownPeerIsNotReachableThroughItsRelay: reachable means something
// came back from the peer itself recently, over whatever path; a peer that
// went silent is relayed, and the relay's answers do not make it
// reachable (they did: status said "reachable yes, relayed via the
// master" about a node that was down).
func TestADownPeerIsNotReachableThroughItsRelay(t *testing.T) {
	r := newRig(t)
	r.dev.hear(r.master, 92)
	r.dev.hear(r.home, 92)
	r.m.Tick()
	now := r.clk.now()
	if st := r.m.Status()[r.home]; !Reachable(st.Heard, now, r.keepalive) {
		t.Fatalf("home, just heard from, is not reachable: %+v", st)
	}
	// home goes down; the master keeps answering.
	for range 12 {
		r.clk.advance(5 * time.Second)
		r.dev.hear(r.master, 32)
		r.m.Tick()
	}
	now = r.clk.now()
	st := r.m.Status()
	if !st[r.home].Relayed {
		t.Errorf("home, silent for 60 s, is not relayed: %+v", st[r.home])
	}
	if Reachable(st[r.home].Heard, now, r.keepalive) {
		t.Errorf("home, silent for 60 s, is reachable (through its relay?): %+v", st[r.home])
	}
	if !Reachable(st[r.master].Heard, now, r.keepalive) {
		t.Errorf("the master, heard 5 s ago, is not reachable: %+v", st[r.master])
	}
	// Without keepalives nothing comes when idle: a handshake within
	// WireGuard's session lifetime counts.
	if !Reachable(now.Add(-100*time.Second), now, 0) || Reachable(now.Add(-200*time.Second), now, 0) {
		t.Error("without keepalives, the window is not 180 s")
	}
}
