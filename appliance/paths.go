package appliance

import (
	"context"
	"net/netip"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/paths"
	"github.com/wgk3s/wgk3s/probe"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// pathsConfig is what package paths needs from the file.
func pathsConfig(cfg *configs.Config) paths.Config {
	c := paths.Config{Self: cfg.Self.PublicKey, Keepalive: cfg.Cluster.Interface.PersistentKeepalive}
	for _, n := range cfg.Peers() {
		c.Peers = append(c.Peers, paths.Peer{Name: n.Name, Key: n.PublicKey, Configured: n.Endpoint.Host != ""})
	}
	return c
}

// startPaths starts keeping each peer direct or relayed. With the
// userspace data path the tunnel's mesh gives the probes and this node's
// relay; the nodes that serve the sync publish where they see each node
// from, and a follower takes that for the nodes the file gives no
// endpoint.
func (a *App) startPaths(p *Plan) {
	local := a.parts.LocalPrefixes(p.Tunnel.Name)
	opts := paths.Options{Log: a.log, Local: local}
	if s := a.syncServer; s != nil {
		opts.Observed = func(eps map[wgtypes.Key]netip.AddrPort) { s.SetEndpoints(eps) }
	}
	mesh := a.tun.Mesh()
	if mesh != nil {
		opts.Prober, opts.Router = mesh, mesh.Router
	}
	a.paths = paths.New(a.tun, opts)
	if mesh != nil {
		mesh.Prober.OnPong = func(pong probe.Pong) { a.paths.Pong(pong.Peer, pong.At, pong.RTT); a.pongs.deliver(pong) }
		mesh.Prober.OnCandidates = a.paths.Candidates
		a.setProbePeers(p)
		var cands []netip.AddrPort
		for _, l := range local {
			cands = append(cands, netip.AddrPortFrom(l.Addr(), uint16(p.Tunnel.ListenPort)))
		}
		mesh.Prober.SetCandidates(cands)
	}
	a.paths.SetConfig(p.Paths)
	a.run("paths", a.paths.Run)
	if c := a.syncClient; c != nil {
		a.run("endpoints", func(ctx context.Context) error {
			return c.FollowEndpoints(ctx, func(eps meshsync.Endpoints) { a.paths.SetLearned(eps) })
		})
	}
}

// setProbePeers tells the prober whom it answers: the file's nodes.
func (a *App) setProbePeers(p *Plan) {
	mesh := a.tun.Mesh()
	if mesh == nil {
		return
	}
	var keys []wgtypes.Key
	for _, n := range p.Config.Peers() {
		keys = append(keys, n.PublicKey)
	}
	mesh.Prober.SetPeers(keys)
}
