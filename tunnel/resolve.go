package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func systemResolver(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
}

// resolveAll resolves the endpoints of peers. An endpoint whose host and
// port are unchanged from a peer in prev keeps prev's address (so a reload
// does not move peers between addresses of a round-robin name); new names
// are looked up concurrently with bounded retries. A name that does not
// resolve leaves the peer without an endpoint for now: it can still connect
// to us, and Run keeps trying.
func (t *Tunnel) resolveAll(ctx context.Context, prev []resolvedPeer, peers []Peer, attempts int) []resolvedPeer {
	known := map[wgtypes.Key]resolvedPeer{}
	for _, p := range prev {
		known[p.PublicKey] = p
	}
	out := make([]resolvedPeer, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		out[i].Peer = p
		if old, ok := known[p.PublicKey]; ok && old.Endpoint == p.Endpoint && old.addr.IsValid() {
			out[i].addr = old.addr
			continue
		}
		if p.Endpoint.Host == "" {
			continue
		}
		if ip, isIP := p.Endpoint.IP(); isIP {
			out[i].addr = netip.AddrPortFrom(ip, p.Endpoint.Port)
			continue
		}
		wg.Add(1)
		go func(r *resolvedPeer) {
			defer wg.Done()
			addr, err := t.resolveWithRetry(ctx, r.Endpoint.Host, attempts)
			if err != nil {
				t.log.Warn("endpoint does not resolve; the peer is configured without it and retried later",
					"peer", r.Name, "endpoint", r.Endpoint.String(), "err", err)
				return
			}
			r.addr = netip.AddrPortFrom(addr, r.Endpoint.Port)
		}(&out[i])
	}
	wg.Wait()
	return out
}

func (t *Tunnel) resolveWithRetry(ctx context.Context, host string, attempts int) (netip.Addr, error) {
	backoff := t.opts.ResolveBackoff
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		var a netip.Addr
		if a, err = t.resolveOnce(ctx, host); err == nil {
			return a, nil
		}
		if attempt == attempts {
			break
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return netip.Addr{}, fmt.Errorf("%s: %w (after %d attempts)", host, err, attempts)
}

func (t *Tunnel) resolveOnce(ctx context.Context, host string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := t.opts.Resolver(ctx, host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address", host)
}

// reresolve looks up again the DNS endpoint of every peer whose latest
// handshake is older than staleHandshake (or never happened), or that is
// relayed (its handshakes are fresh through the relay, yet its direct
// path does not work: its name may point elsewhere now), and moves the
// peer to the new address if the name now points elsewhere. This is
// wireguard-tools' reresolve-dns.sh, built in.
func (t *Tunnel) reresolve(ctx context.Context) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || !slices.ContainsFunc(t.state.peers, func(p resolvedPeer) bool { return p.hasDNSEndpoint() }) {
		return // nothing to re-resolve: no need to read the device
	}
	dev, err := t.wg.Device(t.state.cfg.Name)
	if err != nil {
		t.log.Warn("cannot read the device to check handshakes", "err", err)
		return
	}
	last := map[wgtypes.Key]time.Time{}
	current := map[wgtypes.Key]netip.AddrPort{}
	for _, p := range dev.Peers {
		last[p.PublicKey] = p.LastHandshakeTime
		if p.Endpoint != nil {
			ap := p.Endpoint.AddrPort()
			current[p.PublicKey] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	for i := range t.state.peers {
		p := &t.state.peers[i]
		relayed := t.state.paths[p.PublicKey].Relayed()
		if !p.hasDNSEndpoint() || t.now().Sub(last[p.PublicKey]) < staleHandshake && !relayed {
			continue
		}
		a, err := t.resolveOnce(ctx, p.Endpoint.Host)
		if err != nil {
			t.log.Warn("re-resolving endpoint failed", "peer", p.Name, "endpoint", p.Endpoint.String(), "err", err)
			continue
		}
		addr := netip.AddrPortFrom(a, p.Endpoint.Port)
		// Compare with the endpoint in use, which roaming may have moved
		// away from the one we configured.
		from := current[p.PublicKey]
		if relayed {
			from = p.addr // the device's endpoint is the relay's
		}
		if addr == from {
			p.addr = addr
			continue
		}
		next := t.state
		next.peers = slices.Clone(t.state.peers)
		next.peers[i].addr = addr
		op := peerConfig(next.effective()[i]) // with its allowed IPs as its path has them
		op.UpdateOnly = true
		if err := t.wg.ConfigureDevice(t.state.cfg.Name, wgtypes.Config{Peers: []wgtypes.PeerConfig{op}}); err != nil {
			t.log.Warn("updating endpoint failed", "peer", p.Name, "err", err)
			continue
		}
		t.log.Info("peer endpoint re-resolved", "peer", p.Name, "endpoint", p.Endpoint.String(), "from", from, "to", addr)
		t.state = next
	}
}
