// Package paths decides how this node reaches each peer: directly, or
// through a relay, another node with a public endpoint that forwards the
// pair's WireGuard datagrams still encrypted (package relay).
//
// With the userspace data path the decisions rest on probes (package
// probe) on WireGuard's own port:
//
//   - A direct peer is watched by what comes from its address, every
//     fastEvery while data goes to a peer (slowEvery when idle). When this
//     node sent to it and nothing came back for suspectAfter (or three
//     round trips of a slower path), or nothing came at all for a
//     keepalive and a second, its address is pinged; a path whose pings go
//     unanswered for deadAfter (or a ping gap and three round trips) is
//     dead, and the peer is relayed through the best live relay at once.
//   - The relays (the nodes the file gives an endpoint) are pinged twice a
//     second while any peer is relayed or in doubt, and every ten seconds
//     otherwise: the live one with the shortest round trip is the best,
//     the next is ready; one that stops answering is replaced about two
//     seconds later.
//   - A relayed peer's direct addresses (the file's, the one the master
//     sees it at, the ones on this node's own networks it said it has)
//     are pinged every two seconds: the first to answer takes it direct.
//   - The two ends of a pair must use one relay: a relay routes a
//     session's datagrams by what it learned from that session's
//     handshake. Whoever changes a path starts a handshake on the new one
//     at once, and the other end's WireGuard follows it there (roaming);
//     this node adopts what its peer's datagrams come through. When both
//     would choose, the end with the lower public key (the leader) does;
//     the other waits a second for it.
//
// Without a prober (kernel mode: the kernel owns the port) liveness comes
// from WireGuard's counters, a relay is the first one in the file that
// answers handshakes, and a direct path is tried again every ProbeEvery.
package paths

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/relay"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Peer is one other node.
type Peer struct {
	Name string
	Key  wgtypes.Key
	// Configured says the file gives its endpoint: it may relay for
	// others (if it answers probes: the userspace data path).
	Configured bool
}

// Config is what the cluster file says, for this node.
type Config struct {
	Self  wgtypes.Key
	Peers []Peer
	// Keepalive is the file's persistent keepalive; 0 turns relaying off
	// (without keepalives a quiet path looks dead).
	Keepalive time.Duration
}

// Device is the tunnel, as the manager uses it.
type Device interface {
	Device() (*wgtypes.Device, error)
	SetPaths(map[wgtypes.Key]tunnel.Path) error
	// Probe makes WireGuard send to each of keys now (a handshake if it
	// has no session); Renew starts a new session with each.
	Probe([]wgtypes.Key) error
	Renew([]wgtypes.Key) error
	// Configured are the file's endpoints, resolved.
	Configured() map[wgtypes.Key]netip.AddrPort
}

// Prober is the userspace data path's probes (tunnel.Mesh).
type Prober interface {
	Ping(peer wgtypes.Key, at netip.AddrPort) error
	// Activity says when a datagram last went to addr and came from it.
	Activity(addr netip.AddrPort) (sent, received time.Time)
}

// Options tune a Manager; the zero value is the production behaviour.
type Options struct {
	Log *slog.Logger
	Now func() time.Time
	// Prober and Router are the userspace data path's (nil in kernel
	// mode): the probes, and the relay this node is for the others.
	Prober Prober
	Router *relay.Router
	// ProbeEvery is how often, without a prober, a relayed peer is tried
	// directly again (default 60 s).
	ProbeEvery time.Duration
	// Observed is called with where each directly reached node is seen
	// from, whenever that changes (the master and servers serve it).
	Observed func(map[wgtypes.Key]netip.AddrPort)
	// Local are this host's own addresses (the relay never forwards to
	// them) and the networks they are on (a peer's candidate address on
	// one of them is tried directly).
	Local []netip.Prefix
}

// Status is how this node reaches one peer.
type Status struct {
	Relayed bool
	Via     string // the relay's name, when relayed
	// Learned is the endpoint in use when the file gives none, or a
	// direct address found that wins over the file's.
	Learned netip.AddrPort
	// Since is when the path last changed.
	Since time.Time
	// Heard is when something last came from the peer, over any path.
	Heard time.Time
	// RTT is the last probe's round trip (0: none yet).
	RTT time.Duration
}

// Manager keeps the paths. Run does the work; the setters may be called
// from any goroutine.
type Manager struct {
	dev  Device
	opts Options
	log  *slog.Logger
	kick chan struct{}

	mu       sync.Mutex
	cfg      Config
	learned  map[wgtypes.Key]netip.AddrPort   // from the sync: where the master sees each node
	lan      map[wgtypes.Key][]netip.AddrPort // candidates a peer said it has on this node's networks
	peers    map[wgtypes.Key]*peer
	relays   map[wgtypes.Key]*relayState
	observed map[wgtypes.Key]netip.AddrPort // the device's endpoints
	applied  map[wgtypes.Key]tunnel.Path
	failed   bool
	// lastPublished is what Observed was last given.
	lastPublished map[wgtypes.Key]netip.AddrPort
	fast          bool // something is in doubt: tick every fastEvery
}

// New returns a manager for dev.
func New(dev Device, opts Options) *Manager {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ProbeEvery == 0 {
		opts.ProbeEvery = time.Minute
	}
	return &Manager{dev: dev, opts: opts, log: opts.Log, kick: make(chan struct{}, 1),
		learned: map[wgtypes.Key]netip.AddrPort{}, lan: map[wgtypes.Key][]netip.AddrPort{},
		peers: map[wgtypes.Key]*peer{}, relays: map[wgtypes.Key]*relayState{}}
}

// SetConfig takes the file's nodes (at start and at every reload).
func (m *Manager) SetConfig(c Config) {
	m.mu.Lock()
	m.cfg = c
	m.mu.Unlock()
	m.poke()
}

// SetLearned takes where the master sees each node. A node the master no
// longer lists (it restarted and has not heard from it yet) keeps the
// endpoint learned before.
func (m *Manager) SetLearned(eps map[wgtypes.Key]netip.AddrPort) {
	m.mu.Lock()
	for k, ap := range eps {
		if ap.IsValid() {
			m.learned[k] = ap
		}
	}
	m.mu.Unlock()
	m.poke()
}

// Candidates takes the addresses a peer says it can be reached at; those
// on this node's own networks are tried directly.
func (m *Manager) Candidates(peer wgtypes.Key, addrs []netip.AddrPort) {
	var mine []netip.AddrPort
	for _, a := range addrs {
		for _, p := range m.opts.Local {
			if p.Contains(a.Addr()) && p.Addr() != a.Addr() {
				mine = append(mine, a)
				break
			}
		}
	}
	m.mu.Lock()
	m.lan[peer] = mine
	m.mu.Unlock()
}

func (m *Manager) poke() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Status returns how each peer is reached, by key.
func (m *Manager) Status() map[wgtypes.Key]Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[wgtypes.Key]Status, len(m.peers))
	for k, p := range m.peers {
		st := Status{Relayed: p.path.Relayed(), Since: p.since, Learned: p.path.Endpoint, Heard: p.heard, RTT: p.rtt}
		if r := m.relays[p.path.Via]; r != nil {
			st.Via = r.name
		}
		out[k] = st
	}
	return out
}

// Reachable says whether something came back from a peer heard at heard,
// at now, for a file with keepalive: within two keepalives and 5 s, or
// without keepalives (nothing is sent when idle) within WireGuard's
// session lifetime.
func Reachable(heard, now time.Time, keepalive time.Duration) bool {
	window := 2*keepalive + 5*time.Second
	if keepalive == 0 {
		window = 180 * time.Second
	}
	return !heard.IsZero() && now.Sub(heard) < window
}

// Timing of the decisions (see the package comment).
const (
	fastEvery    = 250 * time.Millisecond
	slowEvery    = time.Second
	suspectAfter = 500 * time.Millisecond
	pingGap      = 300 * time.Millisecond
	deadAfter    = 700 * time.Millisecond
	upgradeEvery = 2 * time.Second
	leaderWait   = time.Second
)

// Run reads the device and moves paths until ctx is cancelled.
func (m *Manager) Run(ctx context.Context) error {
	timer := time.NewTimer(0) // at once: the relays are pinged from the start
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-timer.C:
		}
		m.Tick()
		m.mu.Lock()
		every := slowEvery
		if m.fast {
			every = fastEvery
		}
		m.mu.Unlock()
		timer.Reset(every)
	}
}

// Pong takes a probe's answer (tunnel.Mesh's prober calls it).
func (m *Manager) Pong(from wgtypes.Key, at netip.AddrPort, rtt time.Duration) {
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.relays[from]; r != nil && r.addr == at {
		r.pong(now, rtt)
	}
	if p := m.peers[from]; p != nil {
		if p.pongs == nil {
			p.pongs = map[netip.AddrPort]time.Time{}
		}
		p.pongs[at] = now
		if !m.isRelayAddr(at) {
			p.rtt = rtt
		}
	}
}
