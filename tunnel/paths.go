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
	// Endpoint is used when the file gives the peer no endpoint: the
	// address the master sees the peer at (learned over the sync). A
	// configured endpoint always wins.
	Endpoint netip.AddrPort
	// Via, when set, is the peer that relays this one: the peer's allowed
	// IPs move to Via's entry, so its traffic goes through the relay,
	// while its own entry keeps its endpoint and keepalive, so a direct
	// handshake can still happen and be seen.
	Via wgtypes.Key
}

// Relayed says whether the path goes through a relay.
func (p Path) Relayed() bool { return p.Via != (wgtypes.Key{}) }

// effective returns the peers as they go to the device: configured, with
// learned endpoints filled in and relayed peers' allowed IPs moved to their
// relay's entry.
func (s state) effective() []resolvedPeer {
	if len(s.paths) == 0 {
		return s.withStandbys(slices.Clone(s.peers))
	}
	out := make([]resolvedPeer, len(s.peers))
	index := make(map[wgtypes.Key]int, len(s.peers))
	for i, p := range s.peers {
		out[i] = p
		out[i].AllowedIPs = slices.Clone(p.AllowedIPs)
		index[p.PublicKey] = i
	}
	for i := range out {
		path, ok := s.paths[out[i].PublicKey]
		if !ok {
			continue
		}
		if !out[i].addr.IsValid() && path.Endpoint.IsValid() {
			out[i].addr = path.Endpoint
		}
		via, ok := index[path.Via]
		if !path.Relayed() || !ok || via == i {
			continue
		}
		if s.paths[out[via].PublicKey].Relayed() {
			continue // no chains: a relay is reached directly
		}
		out[via].AllowedIPs = append(out[via].AllowedIPs, s.peers[i].AllowedIPs...)
		out[i].AllowedIPs = nil
	}
	return s.withStandbys(out)
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
