package tunnel

import (
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A node's key change is make-before-break. When a file gives a peer a new
// key (the same allowed IPs under a key the device does not have), the new
// key goes on the device as a standby peer, with no allowed IPs, and the
// old key keeps the peer's allowed IPs and sessions. The node itself
// switches to its new private key whenever it is ready; its first
// handshake as the new key finds the standby peer here, and that handshake
// promotes it: the allowed IPs move to the new key and the old one goes.
// So a peer that takes the file early loses nothing, and one that takes it
// late is reached as soon as the node's handshake arrives. A standby that
// never handshakes is promoted after retireAfter anyway (the file is the
// truth), except on the master (Config.HoldOldKeys), where the node may
// still have to ask with its old key.
//
//	file: K0 -> K1          device: K0 (allowed IPs) + K1 (standby)
//	K1 handshakes           device: K1 (allowed IPs)
const retireAfter = 3 * time.Minute

// promoteEvery is how often the device is read for standby handshakes
// while there are any: the node's traffic is lost from its switch to the
// promotion here.
const promoteEvery = 50 * time.Millisecond

// retiring is the old key of a peer whose key changed, kept in use until
// the new key makes a handshake.
type retiring struct {
	old   resolvedPeer
	since time.Time
}

// keyChanges finds the peers of next that replace a peer of old under a
// new key (same allowed IPs), keeping the changes still under way.
func keyChanges(old, next state, now time.Time) map[wgtypes.Key]retiring {
	inNext := map[wgtypes.Key]bool{}
	for _, p := range next.peers {
		inNext[p.PublicKey] = true
	}
	out := map[wgtypes.Key]retiring{}
	for k, r := range old.retiring {
		if inNext[k] && !inNext[r.old.PublicKey] {
			out[k] = r
		}
	}
	had := keyIndex(old.peers)
	for _, was := range old.peers {
		if inNext[was.PublicKey] {
			continue
		}
		for _, p := range next.peers {
			if _, ok := had[p.PublicKey]; !ok && len(p.AllowedIPs) > 0 && slices.Equal(p.AllowedIPs, was.AllowedIPs) {
				out[p.PublicKey] = retiring{old: was, since: now}
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func keyIndex(ps []resolvedPeer) map[wgtypes.Key]int {
	m := make(map[wgtypes.Key]int, len(ps))
	for i, p := range ps {
		m[p.PublicKey] = i
	}
	return m
}

// withStandbys returns peers with each retiring key's standby: the new key
// without allowed IPs, the old key with them, after the others (so that
// peers[i] still is the state's i-th peer).
func (s state) withStandbys(peers []resolvedPeer) []resolvedPeer {
	if len(s.retiring) == 0 {
		return peers
	}
	var olds []resolvedPeer
	for i := range peers {
		r, ok := s.retiring[peers[i].PublicKey]
		if !ok {
			continue
		}
		old := r.old
		old.AllowedIPs, peers[i].AllowedIPs = peers[i].AllowedIPs, nil
		if !peers[i].addr.IsValid() {
			peers[i].addr = old.addr
		}
		olds = append(olds, old)
	}
	return append(peers, olds...)
}

// promoteStandbys moves the allowed IPs of each standby key that made a
// handshake, or that waited retireAfter, from the old key to it.
func (t *Tunnel) promoteStandbys() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.state.retiring) == 0 {
		return
	}
	dev, err := t.wg.Device(t.state.cfg.Name)
	if err != nil {
		return
	}
	shook := map[wgtypes.Key]bool{}
	for _, p := range dev.Peers {
		shook[p.PublicKey] = !p.LastHandshakeTime.IsZero()
	}
	next := t.state
	next.retiring = map[wgtypes.Key]retiring{}
	var promoted []string
	for k, r := range t.state.retiring {
		if shook[k] || !t.state.cfg.HoldOldKeys && t.now().Sub(r.since) >= retireAfter {
			promoted = append(promoted, r.old.Name)
			continue
		}
		next.retiring[k] = r
	}
	if len(promoted) == 0 {
		return
	}
	if c := deviceChanges(t.state, next); c != nil {
		if err := t.wg.ConfigureDevice(t.state.cfg.Name, *c); err != nil {
			t.log.Warn("a peer's new key: moving its allowed IPs to it failed; trying again", "peers", promoted, "err", err)
			return
		}
	}
	t.state = next
	t.log.Info("a peer's new key is in use: its old key is gone", "peers", promoted)
}

func (t *Tunnel) standbys() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.state.retiring)
}
