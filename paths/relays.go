package paths

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// relayState is a node that may relay: the file gives it an endpoint.
type relayState struct {
	name  string
	key   wgtypes.Key
	order int            // its place in the file (the master first)
	addr  netip.AddrPort // where this node reaches it
	rtt   time.Duration  // smoothed
	// lastPong is its last answer; unanswered the first ping sent since.
	lastPong, lastPing, unanswered time.Time
	heard                          time.Time // without a prober: what came from it
}

// Pinging the relays: every relayNeeded while a peer is relayed or in
// doubt, every relayIdle otherwise (the best and the next stay known).
const (
	relayNeeded = 500 * time.Millisecond
	relayIdle   = 10 * time.Second
	// relayDead is how long a relay's pings may go unanswered: with pings
	// every relayNeeded, a relay that stops answering is replaced about
	// two seconds later.
	relayDead = 1200 * time.Millisecond
)

// relay updates what is known of np as a relay. The caller holds m.mu.
func (m *Manager) relay(np Peer, now time.Time) {
	r := m.relays[np.Key]
	if r == nil {
		r = &relayState{key: np.Key}
		m.relays[np.Key] = r
	}
	r.name = np.Name
	for i, q := range m.cfg.Peers {
		if q.Key == np.Key {
			r.order = i
		}
	}
	p := m.peers[np.Key]
	// Where it is reached: the device's endpoint while it is direct,
	// else the file's.
	if ob := m.observed[np.Key]; ob.IsValid() && !p.path.Relayed() {
		r.addr = ob
	} else if p.configured.IsValid() {
		r.addr = p.configured
	}
	r.heard = p.heard
}

func (r *relayState) pong(now time.Time, rtt time.Duration) {
	if r.rtt == 0 {
		r.rtt = rtt
	} else {
		r.rtt = (3*r.rtt + rtt) / 4
	}
	r.lastPong, r.unanswered = now, time.Time{}
}

// live says whether the relay answers: its pings (with a prober), or,
// without one, something came from it within two keepalives and 5 s.
func (m *Manager) live(r *relayState, now time.Time) bool {
	if m.opts.Prober == nil {
		return Reachable(r.heard, now, m.cfg.Keepalive)
	}
	if r.lastPong.IsZero() {
		return false
	}
	return r.unanswered.IsZero() || now.Sub(r.unanswered) < relayDead
}

// pingRelays pings the relays that are due. The caller holds m.mu.
func (m *Manager) pingRelays(now time.Time) {
	if m.opts.Prober == nil {
		return
	}
	every := relayIdle
	for _, p := range m.peers {
		if p.path.Relayed() || !p.suspect.IsZero() {
			every = relayNeeded
		}
	}
	for _, r := range m.relays {
		if !r.addr.IsValid() || now.Sub(r.lastPing) < every {
			continue
		}
		if r.lastPing.After(r.lastPong) && r.unanswered.IsZero() {
			r.unanswered = r.lastPing
		}
		r.lastPing = now
		m.opts.Prober.Ping(r.key, r.addr)
	}
}

// best is the live relay with the shortest round trip (without a prober,
// the first live one in the file) for a peer other than exclude.
func (m *Manager) best(exclude wgtypes.Key, now time.Time) *relayState {
	var b *relayState
	for _, r := range m.relays {
		if r.key == exclude || r.key == m.cfg.Self || !r.addr.IsValid() || !m.live(r, now) {
			continue
		}
		if p := m.peers[r.key]; p != nil && p.path.Relayed() {
			continue // a relay is reached directly: no chains
		}
		if b == nil || better(r, b, m.opts.Prober != nil) {
			b = r
		}
	}
	return b
}

func better(r, than *relayState, byRTT bool) bool {
	if byRTT && r.rtt != than.rtt {
		return r.rtt < than.rtt
	}
	return r.order < than.order
}

// relayAt is the relay reached at addr, other than for key itself.
func (m *Manager) relayAt(addr netip.AddrPort, key wgtypes.Key) *relayState {
	for _, r := range m.relays {
		if r.addr == addr && r.key != key {
			return r
		}
	}
	return nil
}

// isRelayAddr says whether addr is a relay's.
func (m *Manager) isRelayAddr(addr netip.AddrPort) bool {
	for _, r := range m.relays {
		if r.addr == addr {
			return true
		}
	}
	return false
}

// isRelayAddrOf says whether addr is the address of a relay other than key.
func (m *Manager) isRelayAddrOf(addr netip.AddrPort, key wgtypes.Key) bool {
	return m.relayAt(addr, key) != nil
}
