package paths

import (
	"net/netip"
	"slices"
	"time"

	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// decide moves one peer's path; it says whether a handshake should start
// on the new one (this node changed it; an adopted path has its own).
// The caller holds m.mu.
func (m *Manager) decide(np Peer, now time.Time) bool {
	p := m.peers[np.Key]
	m.adopt(np.Key, p, now)
	switch {
	case m.cfg.Keepalive == 0:
		// Without keepalives a quiet path looks dead: direct only.
		p.path.Via = wgtypes.Key{}
		return m.learn(np, p, now)
	case m.opts.Prober == nil:
		return m.byCounters(np, p, now)
	case p.path.Relayed():
		return m.whileRelayed(np, p, now)
	}
	return m.whileDirect(np, p, now)
}

// learn takes the endpoint learned from the sync for a peer the file
// gives none, when it has no address yet, or (without a prober) when its
// path is silent: a live path keeps the address it works at (behind a
// symmetric NAT a peer is seen at another port by each node). With a
// prober, a dead path is relayed and its learned address tried from
// there.
func (m *Manager) learn(np Peer, p *peer, now time.Time) bool {
	learned, ok := m.learned[np.Key]
	if !ok || np.Configured || learned == p.path.Endpoint || p.path.Relayed() {
		return false
	}
	if p.path.Endpoint.IsValid() && (m.opts.Prober != nil || Reachable(p.heard, now, m.cfg.Keepalive)) {
		return false
	}
	p.path.Endpoint = learned
	return true
}

// adopt follows the peer's datagrams when they come another way than
// this node sent them (its WireGuard roamed there): through a relay that
// answers, or directly.
func (m *Manager) adopt(key wgtypes.Key, p *peer, now time.Time) {
	ob := m.observed[key]
	if !ob.IsValid() || ob == p.seen {
		p.seen = ob
		return
	}
	p.seen = ob
	if ob == m.intended(key, p) {
		return
	}
	if r := m.relayAt(ob, key); r != nil {
		if m.live(r, now) {
			m.setRelayed(p, r, now, "its datagrams come through this relay")
		}
		return
	}
	if p.path.Relayed() || p.path.Endpoint.IsValid() || ob != p.configured {
		m.setDirect(p, ob, now, "its datagrams come directly from there")
	}
}

// intended is where this node means to reach the peer.
func (m *Manager) intended(key wgtypes.Key, p *peer) netip.AddrPort {
	if r := m.relays[p.path.Via]; p.path.Relayed() && r != nil {
		return r.addr
	}
	if p.path.Endpoint.IsValid() {
		return p.path.Endpoint
	}
	if p.configured.IsValid() {
		return p.configured
	}
	return m.learned[key]
}

// whileDirect watches a direct path and relays the peer when it dies.
func (m *Manager) whileDirect(np Peer, p *peer, now time.Time) bool {
	changed := m.learn(np, p, now)
	addr := m.intended(np.Key, p)
	if !addr.IsValid() {
		if r := m.best(np.Key, now); r != nil {
			m.setRelayed(p, r, now, "no address of it is known")
			return true
		}
		return changed
	}
	sent, recv := m.opts.Prober.Activity(addr)
	if recv.After(p.heard) {
		p.heard = recv
	}
	if !p.suspect.IsZero() && (recv.After(p.suspect) || p.pongs[addr].After(p.suspect)) {
		p.suspect = time.Time{} // it answers
	}
	doubt := sent.After(recv) && now.Sub(recv) > max(suspectAfter, 3*p.rtt) || now.Sub(recv) > m.cfg.Keepalive+time.Second
	if doubt && p.suspect.IsZero() {
		p.suspect = now
	}
	if p.suspect.IsZero() {
		return changed
	}
	m.fast = true
	if now.Sub(p.pinged) >= pingGap {
		p.pinged = now
		m.opts.Prober.Ping(np.Key, addr)
	}
	if now.Sub(p.suspect) < max(deadAfter, pingGap+3*p.rtt) {
		return changed
	}
	r := m.best(np.Key, now)
	if r == nil {
		return changed // nothing better: keep trying this one
	}
	m.setRelayed(p, r, now, "its direct path stopped answering")
	return true
}

// whileRelayed tries the peer's direct addresses and keeps its relay
// alive: a dead relay is replaced by the next (the leader chooses; the
// other end waits leaderWait for it).
func (m *Manager) whileRelayed(np Peer, p *peer, now time.Time) bool {
	cands := m.candidates(np.Key, p)
	if c, ok := m.answered(p, cands, now); ok {
		m.setDirect(p, c, now, "it answers directly there")
		return true
	}
	if now.Sub(p.pinged) >= upgradeEvery {
		p.pinged = now
		for _, c := range cands {
			m.opts.Prober.Ping(np.Key, c)
		}
		if r := m.relays[p.path.Via]; r != nil {
			m.opts.Prober.Ping(np.Key, r.addr) // through the relay: its round trip, and our candidates
		}
	}
	r := m.relays[p.path.Via]
	if r != nil && m.live(r, now) {
		p.waiting = time.Time{}
		return m.renewAgain(p, now)
	}
	m.fast = true
	if !m.leader(np.Key) {
		if p.waiting.IsZero() {
			p.waiting = now
		}
		if now.Sub(p.waiting) < leaderWait {
			return false
		}
	}
	if b := m.best(np.Key, now); b != nil && (r == nil || b.key != r.key) {
		m.setRelayed(p, b, now, "its relay stopped answering")
		return true
	}
	return false
}

// renewRetry is how soon a new session through a relay is asked for
// again when no handshake came back: the relay may not have known either
// end yet (it learns where the nodes are each second), and WireGuard by
// itself would wait REKEY_TIMEOUT (5 s) to try again.
const renewRetry = time.Second

// renewAgain says whether to ask again for a session through the relay,
// within the first 15 s of a relayed path that has no handshake yet.
func (m *Manager) renewAgain(p *peer, now time.Time) bool {
	if !p.handshake.Before(p.since) || now.Sub(p.since) > 15*time.Second {
		return false
	}
	m.fast = true
	return now.Sub(p.renewed) >= renewRetry
}

// candidates are the addresses a relayed peer may answer at directly:
// the file's, the one the master sees it at, those it said it has on this
// node's networks; not a relay's.
func (m *Manager) candidates(key wgtypes.Key, p *peer) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range append([]netip.AddrPort{p.configured, m.learned[key]}, m.lan[key]...) {
		if a.IsValid() && !slices.Contains(out, a) && !m.isRelayAddrOf(a, key) {
			out = append(out, a)
		}
	}
	return out
}

// answered is a candidate that answered a ping in the last round: one on
// this node's own networks first.
func (m *Manager) answered(p *peer, cands []netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	var got []netip.AddrPort
	for _, c := range cands {
		if t, ok := p.pongs[c]; ok && now.Sub(t) < upgradeEvery+time.Second && t.After(p.since) {
			got = append(got, c)
		}
	}
	if len(got) == 0 {
		return netip.AddrPort{}, false
	}
	for _, c := range got {
		for _, l := range m.opts.Local {
			if l.Contains(c.Addr()) {
				return c, true
			}
		}
	}
	return got[0], true
}

// byCounters decides without a prober (kernel mode): relayed when nothing
// came directly within two keepalives and 5 s, or what was sent went
// unanswered for 15 s; the direct path is tried again every ProbeEvery.
func (m *Manager) byCounters(np Peer, p *peer, now time.Time) bool {
	changed := m.learn(np, p, now)
	live := Reachable(p.heard, now, m.cfg.Keepalive) && (p.asked.IsZero() || now.Sub(p.asked) < unanswered)
	if p.path.Relayed() {
		if now.Sub(p.tried) >= m.opts.ProbeEvery {
			p.tried = now
			m.setDirect(p, m.learned[np.Key], now, "trying its direct path again")
			return true
		}
		return changed
	}
	if live || now.Sub(p.since) < unanswered {
		return changed
	}
	if r := m.best(np.Key, now); r != nil {
		m.setRelayed(p, r, now, "nothing came from it directly")
		return true
	}
	return changed
}

func (m *Manager) setRelayed(p *peer, r *relayState, now time.Time, why string) {
	if p.path.Via == r.key {
		return
	}
	p.path = tunnel.Path{Via: r.key}
	p.since, p.suspect, p.waiting = now, time.Time{}, time.Time{}
	m.log.Info("paths: a peer is relayed", "peer", p.name, "via", r.name, "why", why)
}

func (m *Manager) setDirect(p *peer, at netip.AddrPort, now time.Time, why string) {
	if !p.path.Relayed() && p.path.Endpoint == at {
		return
	}
	if at == p.configured {
		at = netip.AddrPort{}
	}
	p.path = tunnel.Path{Endpoint: at}
	p.since, p.suspect, p.waiting = now, time.Time{}, time.Time{}
	shown := at
	if !shown.IsValid() {
		shown = p.configured
	}
	m.log.Info("paths: a peer is reached directly", "peer", p.name, "endpoint", shown, "why", why)
}
