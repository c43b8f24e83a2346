package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keyHandOverWait bounds how long a reload that changes the master's key
// waits for every follower to receive the file with the new key before
// wg0 switches to it.
const keyHandOverWait = 15 * time.Second

// droppedHandOverWait bounds how long a reload that drops nodes waits for
// them to receive the file that drops them.
const droppedHandOverWait = 2 * time.Second

// newSyncClient makes the follower's side of the sync: it asks the master
// with the keys of the file this node runs.
func (a *App) newSyncClient(p *Plan) *meshsync.Client {
	apply := a.opts.SyncApply
	if apply == nil {
		apply = func([]byte, func(bool) error) error {
			return errors.New("this appliance takes no cluster file from the master")
		}
	}
	return &meshsync.Client{Master: p.Sync.Master, Log: a.log, Apply: apply,
		Sources: func() []meshsync.Source { return a.Plan().Sync.Sources },
		Have:    func() string { return meshsync.Revision(a.Plan().Config.Cluster.Data) },
		Keys: func() (wgtypes.Key, wgtypes.Key) {
			cfg := a.Plan().Config
			return cfg.PrivateKey.Key(), cfg.Cluster.Master().PublicKey
		}}
}

// startSync starts following the master (the client was made before k3s,
// which may need it for its token) or serving the cluster file.
func (a *App) startSync(p *Plan) error {
	if !p.Sync.Enabled {
		return nil
	}
	if p.Sync.Follow {
		a.run("sync", a.syncClient.Run)
		if p.Snapshots.Keep {
			a.run("snapshots", a.snaps.runKeeper(a.syncClient))
		}
	}
	if !p.Sync.Serve {
		return nil
	}
	s := meshsync.NewServer(a.log, a.tokenFor)
	s.SetAgentToken(func() ([]byte, error) {
		tok, err := configs.ReadToken(a.Plan().Config.Cluster.K3s.AgentTokenFile)
		return []byte(tok), err
	})
	l, err := a.parts.ListenSync(p.Sync.Listen, p.Tunnel.Name)
	if err != nil {
		return err
	}
	a.syncServer = s
	s.SetView(a.view)
	if accept := a.opts.AcceptKey; accept != nil && !p.Sync.Follow { // the master's alone
		s.SetRotate(meshsync.Rotate{Accept: accept})
	}
	a.publish(p)
	if !p.Sync.Follow { // the master's alone; it now knows the nodes
		a.snaps.srv = s
		close(a.serving)
	}
	a.push("sync listener", closer(l))
	a.run("sync serving", func(ctx context.Context) error { return a.serveSync(ctx, s, l, p.Sync.Listen, p.Tunnel.Name) })
	a.log.Info("sync: serving the cluster file and the tokens over wg0", "listen", p.Sync.Listen, "nodes", len(p.Sync.Followers))
	if p.Snapshots.Take {
		a.run("snapshots", a.snaps.runTaker)
	}
	return nil
}

// servingSync waits for the master's sync server (a restore, which runs
// before k3s starts, needs it).
func (a *App) servingSync(ctx context.Context) (*meshsync.Server, error) {
	select {
	case <-a.serving:
		return a.syncServer, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ChangeKey asks the master to replace this node's public key with next
// (see meshsync.Client.RotateKey); the caller switches to the matching
// private key once it said yes.
func (a *App) ChangeKey(ctx context.Context, next wgtypes.Key) error {
	c := a.syncClient
	if c == nil {
		return errors.New("this node does not follow the master (sync is off, or this is the master)")
	}
	return c.RotateKey(ctx, next)
}

// ReachMaster reports whether the master answers this node with the key
// it runs now (see meshsync.Client.Reach).
func (a *App) ReachMaster(ctx context.Context) error {
	c := a.syncClient
	if c == nil {
		return errors.New("this node does not follow the master")
	}
	return c.Reach(ctx)
}

// tokenFor reads the token a follower is handed: agents get the agent
// token, which joins agents and nothing else; the server token never
// leaves the servers.
func (a *App) tokenFor(n meshsync.Node) ([]byte, error) {
	var path string
	k := a.Plan().Config.Cluster.K3s
	switch configs.Role(n.Role) {
	case configs.RoleAgent:
		path = k.AgentTokenFile
	case configs.RoleServer:
		// A server joins etcd and serves the API: it needs the server
		// token, and is a listed node proving its key like any other.
		path = k.TokenFile
	default:
		return nil, fmt.Errorf("no token is handed to a node with role %s", n.Role)
	}
	tok, err := configs.ReadToken(path)
	return []byte(tok), err
}

// serveSync serves until ctx is cancelled, listening again when wg0 was
// recreated (a socket bound to a device keeps the old one).
func (a *App) serveSync(ctx context.Context, s *meshsync.Server, l net.Listener, addr netip.AddrPort, device string) error {
	for {
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Serve(sctx, l) }()
		select {
		case <-ctx.Done():
			cancel()
			return <-done
		case err := <-done:
			cancel()
			return err
		case <-a.relisten:
			cancel()
			<-done
			var err error
			if l, err = a.parts.ListenSync(addr, device); err != nil {
				return err
			}
			a.log.Info("sync: listening again on the recreated " + device)
		}
	}
}

// publish serves p's file with the key wg0 runs with p, to p's followers
// and, for their key change only, to the keys of nodes changing theirs.
func (a *App) publish(p *Plan) {
	if a.syncServer == nil {
		return
	}
	nodes := p.Sync.Followers
	if a.opts.Retiring != nil {
		nodes = append(slices.Clone(nodes), a.opts.Retiring()...)
	}
	a.syncServer.Update(meshsync.Published{Data: p.Config.Cluster.Data, Key: p.Tunnel.PrivateKey, Nodes: nodes})
}

// awaitReceived waits until every node in keys has received revision rev
// (see meshsync.Server.AwaitReceived), or ctx ends; it returns the names
// of those that have not.
func (a *App) awaitReceived(ctx context.Context, keys []wgtypes.Key, rev string) []string {
	if a.syncServer == nil {
		return nil
	}
	d := keyHandOverWait
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	return a.syncServer.AwaitReceived(keys, rev, d)
}

// handOver publishes next's file before next is applied, when applying it
// would cut followers off: a node next drops loses its tunnel (it is
// handed the file first, so that it can say it was dropped), and a new
// master key makes every follower's tunnel to the master fail until it has
// the file that names the new key. The file is served with the key wg0
// still runs; wg0 switches once every follower has received it, or after
// keyHandOverWait. It reports whether it published.
func (a *App) handOver(old, next *Plan) bool {
	if a.syncServer == nil {
		return false
	}
	dropped := droppedNodes(old.Sync.Followers, next.Sync.Followers)
	// Only the master's key is every follower's way in: a server that
	// changes its own key (joined by a code) is a node like any other.
	rotating := old.Tunnel.PrivateKey != next.Tunnel.PrivateKey && !next.Sync.Follow
	if len(dropped) == 0 && !rotating {
		return false
	}
	rev := meshsync.Revision(next.Config.Cluster.Data)
	a.syncServer.Update(meshsync.Published{Data: next.Config.Cluster.Data, Key: old.Tunnel.PrivateKey,
		Nodes: append(slices.Clone(next.Sync.Followers), dropped...)})
	if len(dropped) > 0 {
		a.syncServer.AwaitReceived(keysOf(dropped), rev, droppedHandOverWait)
	}
	if rotating && len(next.Sync.Followers) > 0 {
		a.log.Info("sync: this master's key changes; every node gets the file with the new key before wg0 switches to it", "nodes", len(next.Sync.Followers))
		if missing := a.syncServer.AwaitReceived(keysOf(next.Sync.Followers), rev, a.keyHandOverWait); len(missing) > 0 {
			a.log.Warn("sync: these nodes did not receive the master's new key in time; their tunnel to the master stops working now: copy the master's cluster file to each and restart wgk3s there",
				"nodes", strings.Join(missing, ", "), "waited", a.keyHandOverWait)
		}
		if staged := a.syncServer.Staged(keysOf(next.Sync.Followers), rev); len(staged) > 0 {
			a.log.Warn("sync: these nodes wrote the file with the master's new key for their next start (they wait for a restart for another change); their tunnel to the master stops working until then: systemctl restart wgk3s there",
				"nodes", strings.Join(staged, ", "))
		}
	}
	return true
}

func keysOf(nodes []meshsync.Node) []wgtypes.Key {
	keys := make([]wgtypes.Key, len(nodes))
	for i, n := range nodes {
		keys[i] = n.Key
	}
	return keys
}

// droppedNodes returns the nodes in old that next does not have, by key
// and by name: a node whose key changes (a node joined by an invite
// replacing the code's key) is not dropped, and is not waited for: it has
// switched to its new key already.
func droppedNodes(old, next []meshsync.Node) []meshsync.Node {
	var out []meshsync.Node
	for _, n := range old {
		if !slices.ContainsFunc(next, func(m meshsync.Node) bool { return m.Key == n.Key || m.Name == n.Name }) {
			out = append(out, n)
		}
	}
	return out
}

// ConfigFile is the cluster file a node runs from, and what finds this
// node in it.
type ConfigFile struct {
	Path string
	Opts configs.Options
	Host Host
}

// TakeSynced takes a cluster file from the master, running being the plan
// this node runs. The file is validated as a reload would validate it, and
// refused if it no longer lists this node with this node's key or this
// host cannot run it. Then confirm is asked (the master must still serve
// it); nothing on the host changes before that. A file that needs a
// restart is written to Path for the next start (the error wraps
// meshsync.ErrStaged); any other replaces Path atomically, the previous
// one kept as Path.previous, and reload applies it; if the reload fails,
// the previous file is put back.
func (f ConfigFile) TakeSynced(running *Plan, data []byte, confirm func(staging bool) error, reload func() error) error {
	rev := meshsync.Revision(data)
	name := fmt.Sprintf("the master's cluster file (revision %s)", rev)
	if err := sameNode(running.Config, data, name); err != nil {
		return err
	}
	cfg, err := configs.LoadData(data, name, f.Opts)
	if err != nil {
		return fmt.Errorf("it is not valid on this node: %s", oneLine(err))
	}
	p := NewPlan(cfg, f.Host)
	if err := p.Err(); err != nil {
		return fmt.Errorf("this host cannot run it: %s", oneLine(err))
	}
	restart := RestartRequired(running, p)
	if err := confirm(restart != nil); err != nil {
		return err
	}
	previous, err := configs.ReadFile(f.Path)
	if err != nil {
		return fmt.Errorf("reading this node's cluster file %s: %w", f.Path, err)
	}
	if err := atomicfile.Replace(f.Path+".previous", previous); err != nil {
		return fmt.Errorf("keeping the previous file: %w", err)
	}
	if err := atomicfile.Replace(f.Path, data); err != nil {
		return fmt.Errorf("replacing %s: %w", f.Path, err)
	}
	if restart != nil {
		return fmt.Errorf("%s; the master's file is written to %s (the previous one kept as %s.previous) and takes effect at the next start: systemctl restart wgk3s: %w",
			restartField(restart), f.Path, f.Path, meshsync.ErrStaged)
	}
	if err := reload(); err != nil {
		if rerr := atomicfile.Replace(f.Path, previous); rerr != nil {
			return fmt.Errorf("%w; putting the previous file back also failed: %w", err, rerr)
		}
		return err
	}
	return nil
}

// restartField is RestartRequired's message without its advice.
func restartField(err error) string {
	msg, _, _ := strings.Cut(err.Error(), ": "+ErrRestartRequired.Error())
	return msg + " needs a restart"
}

// sameNode refuses a master's file that no longer lists this node, or
// lists it under another name or key, with what happened in words.
func sameNode(running *configs.Config, data []byte, name string) error {
	cl, err := configs.Parse(data, name)
	if err != nil {
		return fmt.Errorf("it is not valid: %s", oneLine(err))
	}
	self := running.Self
	for _, n := range cl.Nodes {
		switch {
		case n.PublicKey == self.PublicKey && n.Name != self.Name:
			return fmt.Errorf("it names this node (public key %s) %s, not %s; fix: a node is renamed by removing it and adding it again", self.PublicKey, n.Name, self.Name)
		case n.Name == self.Name && n.PublicKey != self.PublicKey:
			return fmt.Errorf("it gives this node (%s) the public key %s, but this node's key (%s) is %s; fix: put %s back in the master's file, or install the new private key here first",
				self.Name, n.PublicKey, running.Cluster.Interface.PrivateKeyFile, self.PublicKey, self.PublicKey)
		case n.Name == self.Name:
			return nil
		}
	}
	return fmt.Errorf("it no longer lists this node (%s, public key %s): it was removed from the cluster; this node keeps running its own file (fix: if that was a mistake, add the entry back to the master's file)",
		self.Name, self.PublicKey)
}
