// Package paths decides how this node reaches each peer: directly, or
// relayed through the master when no direct handshake happens, as with two
// nodes behind NATs that let nothing in that they did not send out to.
//
// A peer is live when something came from it directly within a window (two
// keepalives and some slack): its byte counter grew or it handshook; and
// when data sent to it did not go unanswered for 15 s (a path in use that
// breaks shows that fast). A live
// peer is reached directly; any other is relayed, its allowed IPs on the
// master's entry, while its own entry keeps its endpoint and keepalive so
// that a direct handshake can still happen. A relayed peer is probed (a
// handshake is started) when it gets a new endpoint and every ProbeEvery.
// Both sides of a pair see the same handshakes, so they agree.
//
// A peer the file gives no endpoint is reached at the endpoint the master
// sees it at, learned over the sync (SetLearned). On the master itself the
// manager only watches where each node is seen from and hands that to
// Observed, for the sync to serve.
package paths

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keepaliveBytes is the size of a WireGuard keepalive (a transport header
// and an empty payload's tag): more sent than that in one tick is data or
// a handshake, which a live peer answers.
const keepaliveBytes = 32

// unanswered is how long data or a handshake may go unanswered before the
// direct path counts as dead: WireGuard's KEEPALIVE_TIMEOUT (10 s: a peer
// that received data sends at least a keepalive) plus REKEY_TIMEOUT (5 s),
// the point at which WireGuard itself starts a new handshake.
const unanswered = 15 * time.Second

// Peer is one other node.
type Peer struct {
	Name string
	Key  wgtypes.Key
	// Configured says the file gives its endpoint: a learned one is not
	// used for it.
	Configured bool
}

// Set is what the cluster file says, for this node.
type Set struct {
	// Relay is the master's key; zero on the master itself, which relays
	// and decides nothing.
	Relay     wgtypes.Key
	RelayName string
	Peers     []Peer
	// Keepalive is the file's persistent keepalive; 0 turns relaying off
	// (without keepalives a quiet direct path looks dead).
	Keepalive time.Duration
}

// Device is the tunnel, as the manager uses it.
type Device interface {
	Device() (*wgtypes.Device, error)
	SetPaths(map[wgtypes.Key]tunnel.Path) error
	Probe([]wgtypes.Key) error
}

// Options tune a Manager; the zero value is the production behaviour.
type Options struct {
	Log *slog.Logger
	Now func() time.Time
	// Every is how often the device is read (default: every second while a
	// peer is relayed, so that both sides of a pair go direct within about
	// a second of each other, a direct pair's loss; else half the
	// keepalive, from 1 to 5 s).
	Every time.Duration
	// ProbeEvery is how often a relayed peer is tried directly again
	// (default 60 s; WireGuard retries a handshake for 90 s by itself).
	ProbeEvery time.Duration
	// Observed is called on the master with where each node is seen from,
	// whenever that changes.
	Observed func(map[wgtypes.Key]netip.AddrPort)
}

// Status is how this node reaches one peer.
type Status struct {
	Relayed bool
	Via     string // the relay's name, when relayed
	// Learned is the endpoint the master sees the peer at, when this node
	// uses it (the file gives none).
	Learned netip.AddrPort
	// Since is when the path last changed.
	Since time.Time
	// Heard is when something last came from the peer, over any path.
	Heard time.Time
}

// Manager keeps the paths. Run does the work; the setters may be called
// from any goroutine.
type Manager struct {
	dev  Device
	opts Options
	log  *slog.Logger
	kick chan struct{}

	mu       sync.Mutex
	set      Set
	learned  map[wgtypes.Key]netip.AddrPort
	peers    map[wgtypes.Key]*peer
	observed map[wgtypes.Key]netip.AddrPort
	// applied is what the tunnel has; failed means it may not.
	applied map[wgtypes.Key]tunnel.Path
	failed  bool
}

// peer is what the manager knows of one peer.
type peer struct {
	rx, tx    int64
	handshake time.Time
	heard     time.Time // last time something came from it directly
	// asked is when this node first sent the peer more than a keepalive
	// (data or a handshake) after it last heard from it; zero when it
	// heard since.
	asked   time.Time
	path    tunnel.Path
	since   time.Time
	probed  time.Time
	relayed bool
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
		learned: map[wgtypes.Key]netip.AddrPort{}, peers: map[wgtypes.Key]*peer{}}
}

// SetPeers takes the file's nodes (at start and at every reload).
func (m *Manager) SetPeers(s Set) {
	m.mu.Lock()
	m.set = s
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
		st := Status{Relayed: p.relayed, Since: p.since, Learned: p.path.Endpoint, Heard: p.heard}
		if p.relayed {
			st.Via = m.set.RelayName
		}
		out[k] = st
	}
	return out
}

// Reachable says whether something came back from a peer heard at
// heard, at now, for a file with keepalive: within two keepalives and 5 s,
// or without keepalives (nothing is sent when idle) within WireGuard's
// session lifetime.
func Reachable(heard, now time.Time, keepalive time.Duration) bool {
	window := 2*keepalive + 5*time.Second
	if keepalive == 0 {
		window = 180 * time.Second
	}
	return !heard.IsZero() && now.Sub(heard) < window
}

func (m *Manager) every() time.Duration {
	if m.opts.Every > 0 {
		return m.opts.Every
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.peers {
		if p.relayed {
			return time.Second
		}
	}
	return min(max(m.set.Keepalive/2, time.Second), 5*time.Second)
}

// Run reads the device and moves paths until ctx is cancelled.
func (m *Manager) Run(ctx context.Context) error {
	timer := time.NewTimer(m.every())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-timer.C:
		}
		m.Tick()
		timer.Reset(m.every())
	}
}

// Tick reads the device once and changes what needs changing: it notes
// what came from each peer, decides each peer's path, applies the paths
// that changed and starts the probes due.
func (m *Manager) Tick() {
	dev, err := m.dev.Device()
	if err != nil {
		m.log.Warn("paths: cannot read the WireGuard device", "err", err)
		return
	}
	now := m.opts.Now()
	m.mu.Lock()
	set := m.set
	seen := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dev.Peers {
		seen[p.PublicKey] = p
	}
	observed := observedEndpoints(seen)
	m.hear(set, seen, now)
	if set.Relay == (wgtypes.Key{}) {
		changed := !maps.Equal(observed, m.observed)
		m.observed = observed
		m.mu.Unlock()
		if changed && m.opts.Observed != nil {
			m.opts.Observed(observed)
		}
		return
	}
	next, probe := m.choose(set, seen, observed, now)
	same := !m.failed && maps.Equal(next, m.applied)
	m.mu.Unlock()
	if !same {
		m.apply(next)
	}
	if len(probe) > 0 {
		slices.SortFunc(probe, func(a, b wgtypes.Key) int { return slices.Compare(a[:], b[:]) })
		if err := m.dev.Probe(probe); err != nil {
			m.log.Warn("paths: cannot start a handshake", "err", err)
		}
	}
}

// observedEndpoints are where the device last heard each peer from.
func observedEndpoints(seen map[wgtypes.Key]wgtypes.Peer) map[wgtypes.Key]netip.AddrPort {
	observed := map[wgtypes.Key]netip.AddrPort{}
	for k, dp := range seen {
		if dp.Endpoint != nil {
			ap := dp.Endpoint.AddrPort()
			observed[k] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return observed
}

// hear notes, for every peer of the file, when something last came from
// it (its byte counter grew, or it handshook) and when this node last
// sent it more than a keepalive without an answer. The caller holds m.mu.
func (m *Manager) hear(set Set, seen map[wgtypes.Key]wgtypes.Peer, now time.Time) {
	keep := map[wgtypes.Key]bool{}
	for _, np := range set.Peers {
		keep[np.Key] = true
		p := m.peers[np.Key]
		if p == nil {
			p = &peer{since: now}
			m.peers[np.Key] = p
		}
		dp := seen[np.Key]
		if dp.TransmitBytes-p.tx > keepaliveBytes && p.asked.IsZero() {
			p.asked = now
		}
		if dp.ReceiveBytes > p.rx {
			p.heard, p.asked = now, time.Time{}
		}
		if dp.LastHandshakeTime.After(p.handshake) && dp.LastHandshakeTime.After(p.heard) {
			p.heard = dp.LastHandshakeTime
		}
		p.rx, p.tx, p.handshake = dp.ReceiveBytes, dp.TransmitBytes, dp.LastHandshakeTime
	}
	for k := range m.peers {
		if !keep[k] {
			delete(m.peers, k)
		}
	}
}

// live says whether p answers directly: heard from within the window, and
// not asked in vain: a peer that gets data answers within 10 s
// (WireGuard's passive keepalive), so a path in use that fails shows in
// about 15 s.
func (p *peer) live(window time.Duration, now time.Time) bool {
	return !p.heard.IsZero() && now.Sub(p.heard) < window && (p.asked.IsZero() || now.Sub(p.asked) < unanswered)
}

// choose decides each peer's path and the peers to probe. The caller
// holds m.mu.
func (m *Manager) choose(set Set, seen map[wgtypes.Key]wgtypes.Peer, observed map[wgtypes.Key]netip.AddrPort, now time.Time) (map[wgtypes.Key]tunnel.Path, []wgtypes.Key) {
	_, relayUp := seen[set.Relay]
	window := 2*set.Keepalive + 5*time.Second
	next := map[wgtypes.Key]tunnel.Path{}
	var probe []wgtypes.Key
	for _, np := range set.Peers {
		if np.Key == set.Relay {
			continue
		}
		p := m.peers[np.Key]
		live := p.live(window, now)
		path := tunnel.Path{Endpoint: p.path.Endpoint}
		moved := false
		if learned, ok := m.learned[np.Key]; ok && !np.Configured && learned != p.path.Endpoint {
			// Take a new learned endpoint unless a live path roamed
			// somewhere else that works.
			cur := observed[np.Key]
			if !live || cur == p.path.Endpoint || cur == learned || !p.path.Endpoint.IsValid() {
				path.Endpoint, moved = learned, true
			}
		}
		relay := set.Keepalive > 0 && relayUp && !live
		if relay {
			path.Via = set.Relay
		}
		if relay != p.relayed {
			p.relayed, p.since = relay, now
			m.logSwitch(np.Name, set.RelayName, relay, path.Endpoint, observed[np.Key])
		}
		p.path = path
		next[np.Key] = path
		if relay && (moved || now.Sub(p.probed) >= m.opts.ProbeEvery) {
			probe = append(probe, np.Key)
			p.probed = now
		}
	}
	return next, probe
}

func (m *Manager) logSwitch(peer, via string, relayed bool, endpoint, observed netip.AddrPort) {
	if relayed {
		m.log.Info("paths: no direct handshake with a peer; relaying its traffic through the master",
			"peer", peer, "via", via, "endpoint", endpointText(endpoint, observed))
		return
	}
	m.log.Info("paths: a direct handshake with a peer; reaching it directly", "peer", peer, "endpoint", endpointText(observed, endpoint))
}

// apply gives the tunnel the paths, unless it has them.
func (m *Manager) apply(next map[wgtypes.Key]tunnel.Path) {
	err := m.dev.SetPaths(next)
	m.mu.Lock()
	if m.failed = err != nil; !m.failed {
		m.applied = next
	}
	m.mu.Unlock()
	if err != nil {
		m.log.Warn("paths: cannot change the paths; trying again", "err", err)
	}
}

func endpointText(a, b netip.AddrPort) string {
	switch {
	case a.IsValid():
		return a.String()
	case b.IsValid():
		return b.String()
	}
	return "(none known)"
}
