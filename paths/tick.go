package paths

import (
	"bytes"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/wgk3s/wgk3s/relay"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// peer is what the manager knows of one peer.
type peer struct {
	name       string
	configured netip.AddrPort // the file's endpoint, resolved
	rx, tx     int64
	handshake  time.Time
	heard      time.Time // something came from it, over any path
	// asked is when this node first sent the peer more than a keepalive
	// after it last heard from it (the counters' view, without a prober).
	asked time.Time
	path  tunnel.Path // what this node wants
	since time.Time
	// seen is the endpoint the device had at the last read: a change is
	// the peer's datagrams coming another way (roaming).
	seen netip.AddrPort
	// pongs are when each address answered a ping for this peer.
	pongs   map[netip.AddrPort]time.Time
	pinged  time.Time // the last ping round
	suspect time.Time // since when its path has been in doubt
	waiting time.Time // a follower waiting for the leader's choice
	tried   time.Time // without a prober: the last try of the direct path
	renewed time.Time // the last new session asked for through a relay
	rtt     time.Duration
}

// keepaliveBytes is the size of a WireGuard keepalive: more sent than that
// in one tick is data or a handshake, which a live peer answers.
const keepaliveBytes = 32

// unanswered is how long, without a prober, data or a handshake may go
// unanswered before the direct path counts as dead: WireGuard's
// KEEPALIVE_TIMEOUT (10 s) plus REKEY_TIMEOUT (5 s).
const unanswered = 15 * time.Second

// Tick reads the device once and changes what needs changing.
func (m *Manager) Tick() {
	dev, err := m.dev.Device()
	if err != nil {
		m.log.Warn("paths: cannot read the WireGuard device", "err", err)
		return
	}
	configured := m.dev.Configured()
	now := m.opts.Now()
	m.mu.Lock()
	busy := m.read(dev, configured, now)
	m.pingRelays(now)
	var handshake, renew []wgtypes.Key
	// Without a prober (kernel mode) a cut path shows only after
	// `unanswered`: ticking faster would find nothing sooner.
	m.fast = busy && m.opts.Prober != nil
	for _, np := range m.cfg.Peers {
		if !m.decide(np, now) {
			continue
		}
		if p := m.peers[np.Key]; p.path.Relayed() {
			renew = append(renew, np.Key) // the relay must see the session's handshake
			p.renewed = now
		} else {
			handshake = append(handshake, np.Key)
		}
	}
	next := m.wanted()
	same := !m.failed && maps.Equal(next, m.applied)
	observed := m.directEndpoints()
	m.mu.Unlock()
	if !same {
		m.apply(next)
	}
	m.handshakes(handshake, renew)
	m.publish(observed)
}

// read takes the device's view: where each peer is, what came from it.
// The caller holds m.mu.
//
// It returns whether data went to a peer since the last read: the paths
// are then ticked fast, so that a path cut under traffic is noticed within
// fastEvery, not slowEvery.
func (m *Manager) read(dev *wgtypes.Device, configured map[wgtypes.Key]netip.AddrPort, now time.Time) (busy bool) {
	seen := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range dev.Peers {
		seen[p.PublicKey] = p
	}
	m.observed = map[wgtypes.Key]netip.AddrPort{}
	keep := map[wgtypes.Key]bool{}
	for _, np := range m.cfg.Peers {
		keep[np.Key] = true
		p := m.peers[np.Key]
		if p == nil {
			p = &peer{since: now}
			m.peers[np.Key] = p
		}
		p.name, p.configured = np.Name, configured[np.Key]
		dp := seen[np.Key]
		if dp.Endpoint != nil {
			ap := dp.Endpoint.AddrPort()
			m.observed[np.Key] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		if p.hear(dp, now) {
			busy = true
		}
		if np.Configured {
			m.relay(np, now)
		}
	}
	for k := range m.peers {
		if !keep[k] {
			delete(m.peers, k)
		}
	}
	for k := range m.relays {
		if !keep[k] {
			delete(m.relays, k)
		}
	}
	return busy
}

// hear notes what came from the peer and what went unanswered; busy
// says data went to it since the last read.
func (p *peer) hear(dp wgtypes.Peer, now time.Time) (busy bool) {
	busy = dp.TransmitBytes-p.tx > keepaliveBytes
	if busy && p.asked.IsZero() {
		p.asked = now
	}
	if dp.ReceiveBytes > p.rx {
		p.heard, p.asked = now, time.Time{}
	}
	if dp.LastHandshakeTime.After(p.handshake) && dp.LastHandshakeTime.After(p.heard) {
		p.heard = dp.LastHandshakeTime
	}
	p.rx, p.tx, p.handshake = dp.ReceiveBytes, dp.TransmitBytes, dp.LastHandshakeTime
	return busy
}

// wanted are the paths to apply. The caller holds m.mu.
func (m *Manager) wanted() map[wgtypes.Key]tunnel.Path {
	next := make(map[wgtypes.Key]tunnel.Path, len(m.peers))
	for k, p := range m.peers {
		if p.path != (tunnel.Path{}) {
			next[k] = p.path
		}
	}
	return next
}

// directEndpoints are where the directly reached peers are seen from (a
// relayed peer's endpoint is its relay's). The caller holds m.mu.
func (m *Manager) directEndpoints() map[wgtypes.Key]netip.AddrPort {
	out := map[wgtypes.Key]netip.AddrPort{}
	for k, ap := range m.observed {
		if p := m.peers[k]; p != nil && !p.path.Relayed() && !m.isRelayAddrOf(ap, k) {
			out[k] = ap
		}
	}
	return out
}

// publish hands the relay router and Observed where the nodes are.
func (m *Manager) publish(direct map[wgtypes.Key]netip.AddrPort) {
	if m.opts.Router != nil {
		nodes := make([]relay.Node, 0, len(direct))
		for k, ap := range direct {
			nodes = append(nodes, relay.Node{Key: k, Endpoint: ap})
		}
		local := make([]netip.Addr, len(m.opts.Local))
		for i, p := range m.opts.Local {
			local[i] = p.Addr()
		}
		m.opts.Router.SetNodes(nodes, local)
	}
	if m.opts.Observed == nil {
		return
	}
	m.mu.Lock()
	changed := !maps.Equal(direct, m.lastPublished)
	m.lastPublished = direct
	m.mu.Unlock()
	if changed {
		m.opts.Observed(direct)
	}
}

// handshakes starts a handshake with the peers whose path this node moved:
// a new session for those moved to a relay (Renew), a keepalive that
// becomes one where needed for the others (Probe).
func (m *Manager) handshakes(probe, renew []wgtypes.Key) {
	byKey := func(a, b wgtypes.Key) int { return bytes.Compare(a[:], b[:]) }
	if len(renew) > 0 {
		slices.SortFunc(renew, byKey)
		if err := m.dev.Renew(renew); err != nil {
			m.log.Warn("paths: cannot start a new session", "err", err)
		}
	}
	if len(probe) > 0 {
		slices.SortFunc(probe, byKey)
		if err := m.dev.Probe(probe); err != nil {
			m.log.Warn("paths: cannot start a handshake", "err", err)
		}
	}
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

// leader says whether this node chooses the relay for its pair with key:
// the lower public key does.
func (m *Manager) leader(key wgtypes.Key) bool { return bytes.Compare(m.cfg.Self[:], key[:]) < 0 }
