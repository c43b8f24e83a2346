package appliance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/membership"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// inviteCheckEvery is how often a running master looks at its open
// invites: a used one is forgotten, an expired one has its node removed.
const inviteCheckEvery = 30 * time.Second

// keyChangeWait bounds how long the master waits, before it tells a node
// to switch to its new key, for the other nodes to hold that key.
const keyChangeWait = 15 * time.Second

// tidyAtStart is the master's look at its invites before its first load:
// an invite that expired while it was down has its node removed first.
func (n *Node) tidyAtStart() {
	data, err := configs.ReadFile(n.o.Path)
	if err != nil {
		return // the load says why
	}
	cl, err := configs.Parse(data, n.o.Path)
	if err != nil {
		return
	}
	n.master = &membership.Master{Files: membership.DiskFor(n.o.Path, cl)}
	n.tidyWith(nil)
}

// keyChangeCheckEvery is how often the master looks at its invites while a
// node's key change is under way: the invite is used once the new key made
// its handshake, which follows the node's switch within a second.
const keyChangeCheckEvery = time.Second

// tidyEvery is when the master looks at its invites next.
func (n *Node) tidyEvery() time.Duration {
	if n.master != nil {
		if keys, err := n.master.Retiring(); err == nil && len(keys) > 0 {
			return keyChangeCheckEvery
		}
	}
	return inviteCheckEvery
}

// tidy is the master's look at its invites (periodic, and before each
// reload); it says whether an expired invite's node left the file.
func (n *Node) tidy() bool {
	if n.master == nil || n.app == nil {
		return false
	}
	seen := map[wgtypes.Key]bool{}
	for _, p := range n.app.Report().Peers {
		if k, err := wgtypes.ParseKey(p.PublicKey); err == nil && !p.LatestHandshake.IsZero() {
			seen[k] = true
		}
	}
	return n.tidyWith(func(k wgtypes.Key) bool { return seen[k] })
}

// tidyWith runs Tidy and logs what it did; it says whether the file
// changed.
func (n *Node) tidyWith(handshook func(wgtypes.Key) bool) bool {
	if _, invites, err := n.master.Files.Read(); err == nil && len(invites) == 0 {
		return false
	}
	t, err := n.master.Tidy(handshook)
	if err != nil {
		n.log.Warn("invites: cannot look at the open invites; none expires until this is fixed", "err", err)
		return false
	}
	for _, r := range t.Used {
		if r.NewKey != "" {
			n.log.Info("invite used: the node replaced the join code's key with its own and made its first handshake with it", "node", r.Node)
		} else {
			n.log.Info("invite used: the node made its first handshake", "node", r.Node)
		}
	}
	for _, r := range t.Expired {
		n.log.Warn("invite expired before the node's first handshake: removed from the cluster file", "node", r.Node,
			"invited", r.Invited.Format(time.RFC3339), "expired", r.Expires.Format(time.RFC3339), "fix", "appliance invite "+r.Node+" to add it again")
	}
	return len(t.Expired) > 0
}

// acceptKey is the master's side of a joined node replacing its code's
// key (membership/keychange.go): the file names the new key, this node
// applies it (the old key stays in use, the new one on standby), and the
// answer waits until every other node has the file.
func (n *Node) acceptKey(ctx context.Context, node meshsync.Node, next wgtypes.Key) error {
	if n.master == nil {
		return &meshsync.Refusal{Reason: "this master keeps no invites"}
	}
	changed, err := n.master.AcceptKey(node.Name, node.Key, next)
	if err != nil {
		return err
	}
	if changed {
		n.log.Info("join: a node replaces its join code's key with its own", "node", node.Name, "public_key", next.String())
	}
	if err := n.requestReload(); err != nil {
		return fmt.Errorf("applying %s's new key here: %w", node.Name, err)
	}
	p := n.app.Plan()
	var others []wgtypes.Key
	for _, f := range p.Sync.Followers {
		if f.Name != node.Name {
			others = append(others, f.Key)
		}
	}
	rev := meshsync.Revision(p.Config.Cluster.Data)
	wait, cancel := context.WithTimeout(ctx, keyChangeWait)
	defer cancel()
	if missing := n.app.awaitReceived(wait, others, rev); len(missing) > 0 {
		n.log.Warn("sync: these nodes do not have the file with a node's new key yet; they reach it once they take the file",
			"node", node.Name, "missing", strings.Join(missing, ", "))
	}
	return nil
}

// retiring lists the keys of nodes whose key change is under way, for the
// sync to answer their key change again.
func (n *Node) retiring() []meshsync.Node {
	if n.master == nil {
		return nil
	}
	keys, err := n.master.Retiring()
	if err != nil || len(keys) == 0 {
		return nil
	}
	cl := n.app.Plan().Config.Cluster
	var out []meshsync.Node
	for _, r := range keys {
		if nd, ok := cl.NodeByName(r.Node); ok {
			out = append(out, meshsync.Node{Name: r.Node, Key: r.Key, Addr: nd.Address, Role: string(nd.Role), KeyChangeOnly: true})
		}
	}
	return out
}

// startSwitch starts a joined node's key switch, if its key came in a
// code: files from the master wait until it is done.
func (n *Node) startSwitch(ctx context.Context, p *Plan) {
	keyFile := p.Config.Cluster.Interface.PrivateKeyFile
	if p.Config.Self.Role == configs.RoleMaster || !membership.Pending(keyFile) {
		close(n.joining)
		return
	}
	_, expires := membership.Marked(keyFile)
	s := &membership.Switch{KeyFile: keyFile, App: switchApp{n}, Log: n.log, Expires: expires}
	go func() {
		err := s.Run(ctx)
		close(n.joining)
		n.switched <- err
	}()
}

// switchApp is the Node as the key switch uses it.
type switchApp struct{ n *Node }

func (s switchApp) ChangeKey(ctx context.Context, next wgtypes.Key) error {
	c := s.n.app.syncClient
	if c == nil {
		return errors.New("this node does not follow the master (sync is off)")
	}
	return c.RotateKey(ctx, next)
}

func (s switchApp) ReachMaster(ctx context.Context) error {
	c := s.n.app.syncClient
	if c == nil {
		return errors.New("this node does not follow the master")
	}
	return c.Reach(ctx)
}

// UseKey makes key this node's, in its entry of the cluster file and in
// its key file, and reloads. The file is written first and the key last:
// membership.Recover finishes a switch stopped between the two.
func (s switchApp) UseKey(key wgtypes.Key) error {
	n := s.n
	return n.inLoop(func() error {
		p := n.app.Plan()
		keyFile := p.Config.Cluster.Interface.PrivateKeyFile
		data, err := configs.ReadFile(n.o.Path)
		if err != nil {
			return err
		}
		nd, err := configs.SetNodeKey(data, p.Config.Self.Name, key.PublicKey().String())
		if err != nil {
			return err
		}
		if err := atomicfile.Replace(n.o.Path, nd); err != nil {
			return err
		}
		was, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		if err := atomicfile.Secret(keyFile, []byte(key.String()+"\n")); err != nil {
			return errors.Join(err, atomicfile.Replace(n.o.Path, data))
		}
		if err := n.notifiedReload(); err != nil {
			return errors.Join(err, atomicfile.Secret(keyFile, was), atomicfile.Replace(n.o.Path, data))
		}
		return nil
	})
}

// recoverSwitch finishes a joined node's key switch that stopped half
// way (membership.Recover), before the file is loaded.
func (n *Node) recoverSwitch() {
	data, err := configs.ReadFile(n.o.Path)
	if err != nil {
		return
	}
	cl, err := configs.Parse(data, n.o.Path)
	if err != nil {
		return
	}
	if done, err := membership.Recover(cl.Interface.PrivateKeyFile, data); err != nil {
		n.log.Warn("join: cannot finish the key switch an earlier run began", "err", err)
	} else if done {
		n.log.Info("join: finished the key switch an earlier run began (the file named this node's own key)")
	}
}

// syncRequest is a file from the master on its way into the loop.
type syncRequest struct {
	data    []byte
	confirm func(staging bool) error
	reply   chan error
}

// syncApply takes a cluster file from the master, in the loop. A node
// still on its join code's key waits for its switch first (the master's
// file already names its own key), then asks again: what it fetched
// before may be stale by then.
func (n *Node) syncApply(data []byte, confirm func(staging bool) error) error {
	select {
	case <-n.joining:
	default:
		select {
		case <-n.joining:
			return meshsync.ErrNotCurrent
		case <-n.app.Done():
			return ErrNotRunning
		case <-n.over:
			return ErrNotRunning
		}
	}
	req := syncRequest{data: data, confirm: confirm, reply: make(chan error, 1)}
	select {
	case n.syncs <- req:
		return <-req.reply
	case <-n.app.Done():
	case <-n.over:
	}
	return ErrNotRunning
}

func (n *Node) takeSynced(req syncRequest) error {
	file := ConfigFile{Path: n.o.Path, Opts: n.o.Opts, Host: n.o.Host}
	return file.TakeSynced(n.app.Plan(), req.data, req.confirm, func() error {
		n.log.Info("sync: the master's cluster file replaces this node's", "config", n.o.Path, "previous", n.o.Path+".previous")
		return n.notifiedReload()
	})
}
