package tunnel

import (
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// resolvedPeer is a Peer with its endpoint resolved to an address (invalid
// when it has none or its name does not resolve yet).
type resolvedPeer struct {
	Peer
	addr netip.AddrPort
}

// peerChanges returns the wgctrl peer operations that turn the peers in from
// into the peers in to. Peers that are the same in both are left out, so
// their sessions and handshakes are untouched; removed peers get Remove,
// changed ones UpdateOnly with their allowed IPs replaced.
func peerChanges(from, to []resolvedPeer) []wgtypes.PeerConfig {
	old := make(map[wgtypes.Key]resolvedPeer, len(from))
	for _, p := range from {
		old[p.PublicKey] = p
	}
	var ops []wgtypes.PeerConfig
	seen := make(map[wgtypes.Key]bool, len(to))
	for _, p := range to {
		seen[p.PublicKey] = true
		prev, existed := old[p.PublicKey]
		if existed && prev.equal(p.Peer) && prev.addr == p.addr {
			continue
		}
		op := peerConfig(p)
		op.UpdateOnly = existed
		if existed && prev.addr == p.addr {
			// Only the allowed IPs or the keepalive changed: the endpoint
			// WireGuard roamed to is the one that works, keep it.
			op.Endpoint = nil
		}
		ops = append(ops, op)
	}
	for _, p := range from {
		if !seen[p.PublicKey] {
			ops = append(ops, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
		}
	}
	return ops
}

func peerConfig(p resolvedPeer) wgtypes.PeerConfig {
	keepalive := p.Keepalive
	c := wgtypes.PeerConfig{
		PublicKey:                   p.PublicKey,
		PersistentKeepaliveInterval: &keepalive,
		ReplaceAllowedIPs:           true,
		AllowedIPs:                  ipNets(p.AllowedIPs),
	}
	if p.addr.IsValid() {
		c.Endpoint = net.UDPAddrFromAddrPort(p.addr)
	}
	return c
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, len(ps))
	for i, p := range ps {
		out[i] = net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	return out
}

// deviceChanges returns the wgctrl configuration that turns state from into
// state to, or nil when nothing about the WireGuard device differs.
func deviceChanges(from, to state) *wgtypes.Config {
	c := wgtypes.Config{Peers: peerChanges(from.effective(), to.effective())}
	changed := len(c.Peers) > 0
	if from.cfg.PrivateKey != to.cfg.PrivateKey {
		k := to.cfg.PrivateKey
		c.PrivateKey, changed = &k, true
	}
	if from.cfg.ListenPort != to.cfg.ListenPort {
		port := to.cfg.ListenPort
		c.ListenPort, changed = &port, true
	}
	if !changed {
		return nil
	}
	return &c
}

// state is what the tunnel last applied: the desired config, the
// addresses its DNS endpoints resolved to, and the paths (paths.go).
type state struct {
	cfg   Config
	peers []resolvedPeer
	paths map[wgtypes.Key]Path
	// retiring holds, by new key, the old key of each peer whose key
	// change is under way (keychange.go).
	retiring map[wgtypes.Key]retiring
}

// staleHandshake is how old a handshake may be before a DNS endpoint is
// looked up again: wireguard-tools' reresolve-dns.sh uses 135 s, the time
// after which a WireGuard session has surely expired (REKEY_AFTER_TIME 120 s
// plus REKEY_TIMEOUT and jitter).
const staleHandshake = 135 * time.Second
