package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Path is how this node reaches one peer, beyond what the cluster file
// says. The file is the same on every node; a path is what this node
// learned at run time (package paths decides it).
type Path struct {
	// Endpoint, when set, is where the peer is reached directly: an
	// address the peer was found at (the master sees it there, it
	// answered a probe there: its own network's address, say). It wins
	// over the file's endpoint.
	Endpoint netip.AddrPort
	// Via, when set, is the node that relays this peer: the peer's
	// endpoint is the relay's address, and the relay forwards the
	// peer's datagrams, still encrypted, by their header (package
	// relay). The peer keeps its allowed IPs: what the relay sees is
	// ciphertext.
	Via wgtypes.Key
}

// Relayed says whether the path goes through a relay.
func (p Path) Relayed() bool { return p.Via != (wgtypes.Key{}) }

// effective returns the peers as they go to the device: configured, with
// their paths' endpoints (a relay's address for a relayed peer), and the
// standbys of key changes (keychange.go).
func (s state) effective() []resolvedPeer {
	out := slices.Clone(s.peers)
	if len(s.paths) > 0 {
		index := make(map[wgtypes.Key]int, len(s.peers))
		for i, p := range s.peers {
			index[p.PublicKey] = i
		}
		for i := range out {
			path, ok := s.paths[out[i].PublicKey]
			if !ok {
				continue
			}
			if path.Endpoint.IsValid() {
				out[i].addr = path.Endpoint
			}
			via, ok := index[path.Via]
			if !path.Relayed() || !ok || via == i || s.paths[path.Via].Relayed() {
				continue // no chains: a relay is reached directly
			}
			if addr := relayAddr(s, via); addr.IsValid() {
				out[i].addr = addr
			}
		}
	}
	for i := range out {
		out[i].AllowedIPs = slices.Clone(out[i].AllowedIPs)
	}
	return s.withStandbys(out)
}

// relayAddr is where the relay peers[i] is reached: its path's endpoint,
// else the file's.
func relayAddr(s state, i int) netip.AddrPort {
	if p, ok := s.paths[s.peers[i].PublicKey]; ok && p.Endpoint.IsValid() {
		return p.Endpoint
	}
	return s.peers[i].addr
}

// SetPaths replaces the paths. Only the peers whose entry changes are
// touched; a failed change is reverted.
func (t *Tunnel) SetPaths(paths map[wgtypes.Key]Path) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tunnel is closed")
	}
	next := t.state
	next.paths = paths
	c := deviceChanges(t.state, next)
	if c != nil {
		if err := t.wg.ConfigureDevice(t.state.cfg.Name, *c); err != nil {
			return fmt.Errorf("changing the paths on %s: %w", t.state.cfg.Name, errors.Join(err, t.revertDevice(next, t.state)))
		}
	}
	t.state = next
	return nil
}

// Probe makes WireGuard try a handshake with each of keys now: their
// persistent keepalive is switched off and on again, which sends a
// keepalive at once, and a keepalive without a session starts a handshake
// (the kernel module and wireguard-go both do so). Peers without an
// endpoint or keepalive cannot be probed and are skipped.
func (t *Tunnel) Probe(keys []wgtypes.Key) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tunnel is closed")
	}
	return t.probeLocked(keys)
}

func peerKeys(ps []resolvedPeer) []wgtypes.Key {
	keys := make([]wgtypes.Key, len(ps))
	for i, p := range ps {
		keys[i] = p.PublicKey
	}
	return keys
}

// probeLocked is Probe with t.mu held.
func (t *Tunnel) probeLocked(keys []wgtypes.Key) error {
	var off, on []wgtypes.PeerConfig
	for _, p := range t.state.effective() {
		if !slices.Contains(keys, p.PublicKey) || !p.addr.IsValid() || p.Keepalive <= 0 {
			continue
		}
		zero, k := time.Duration(0), p.Keepalive
		off = append(off, wgtypes.PeerConfig{PublicKey: p.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &zero})
		on = append(on, wgtypes.PeerConfig{PublicKey: p.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &k})
	}
	if len(off) == 0 {
		return nil
	}
	name := t.state.cfg.Name
	if err := t.wg.ConfigureDevice(name, wgtypes.Config{Peers: off}); err != nil {
		return fmt.Errorf("probing peers on %s: %w", name, errors.Join(err, t.wg.ConfigureDevice(name, wgtypes.Config{Peers: on})))
	}
	if err := t.wg.ConfigureDevice(name, wgtypes.Config{Peers: on}); err != nil {
		return fmt.Errorf("probing peers on %s: %w", name, err)
	}
	return nil
}

// Configured are the file's endpoints of the peers, resolved.
func (t *Tunnel) Configured() map[wgtypes.Key]netip.AddrPort {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[wgtypes.Key]netip.AddrPort, len(t.state.peers))
	for _, p := range t.state.peers {
		if p.addr.IsValid() {
			out[p.PublicKey] = p.addr
		}
	}
	return out
}

// Renew starts a new session with each of keys now: the peer is removed
// and added again, as it is, so that its next datagram is a handshake.
// A relay routes a session by what it learned from the session's
// handshake, so a path moved to a relay needs one; a keepalive (Probe)
// would go on with a session the relay never saw.
func (t *Tunnel) Renew(keys []wgtypes.Key) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tunnel is closed")
	}
	var ops []wgtypes.PeerConfig
	for _, p := range t.state.effective() {
		if slices.Contains(keys, p.PublicKey) {
			ops = append(ops, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true}, peerConfig(p))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if err := t.wg.ConfigureDevice(t.state.cfg.Name, wgtypes.Config{Peers: ops}); err != nil {
		return fmt.Errorf("renewing sessions on %s: %w", t.state.cfg.Name, err)
	}
	return nil
}
