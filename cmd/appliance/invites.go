package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/invite"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// inviteCheckEvery is how often a running master looks at its open
// invites (only when there are some): a used one is forgotten, an expired
// one makes a reload, which removes its node.
const inviteCheckEvery = 30 * time.Second

// expireInvites runs on the master before each load of the cluster file:
// an invite whose node made a handshake is done; an invite that expired
// first has its node removed from the file, with a log line.
func (r *runner) expireInvites() {
	if r.opts.Role != configs.RoleMaster {
		return
	}
	data, err := configs.ReadFile(r.path)
	if err != nil {
		return // the load says why
	}
	cl, err := configs.Parse(data, r.path)
	if err != nil {
		return
	}
	path := invite.Path(cl.Interface.PrivateKeyFile)
	recs, err := invite.Load(path)
	if err != nil {
		r.log.Warn("invites: cannot read the open invites; none expires until this is fixed", "err", err)
		return
	}
	recs = r.forgetUsed(path, recs)
	expired := invite.Expired(recs, time.Now())
	if len(expired) == 0 {
		return
	}
	next := data
	for _, rec := range expired {
		n, ok := cl.NodeByName(rec.Node)
		if ok && n.PublicKey.String() == rec.PublicKey {
			d, err := configs.RemoveNode(next, rec.Node)
			if err != nil {
				r.log.Warn("invites: cannot remove an expired invite's node from the cluster file", "node", rec.Node, "err", err, "fix", "appliance remove "+rec.Node)
				continue
			}
			next = d
			r.log.Warn("invite expired before the node's first handshake: removed from the cluster file", "node", rec.Node,
				"invited", rec.Invited.Format(time.RFC3339), "expired", rec.Expires.Format(time.RFC3339), "fix", "appliance invite "+rec.Node+" to add it again")
		}
		recs = invite.Drop(recs, rec.Node)
	}
	if !bytes.Equal(next, data) {
		if err := writeKeepingMode(r.path, next); err != nil {
			r.log.Warn("invites: cannot write the cluster file without the expired nodes", "err", err)
			return
		}
	}
	if err := invite.Save(path, recs); err != nil {
		r.log.Warn("invites: cannot update the open invites", "path", path, "err", err)
	}
}

// forgetUsed drops the invites whose node has made a handshake with this
// running master.
func (r *runner) forgetUsed(path string, recs []invite.Record) []invite.Record {
	if r.app == nil || len(recs) == 0 {
		return recs
	}
	before := len(recs)
	for _, p := range r.app.Report().Peers {
		if p.LatestHandshake.IsZero() {
			continue
		}
		for _, rec := range recs {
			if rec.PublicKey == p.PublicKey && !rec.Rotate {
				r.log.Info("invite used: the node made its first handshake", "node", rec.Node)
				recs = invite.Drop(recs, rec.Node)
			}
		}
	}
	if len(recs) != before {
		if err := invite.Save(path, recs); err != nil {
			r.log.Warn("invites: cannot update the open invites", "path", path, "err", err)
		}
	}
	return recs
}

// checkInvites is the master's periodic look: it reloads when an invite
// expired (the reload removes the node).
func (r *runner) checkInvites() {
	if r.opts.Role != configs.RoleMaster {
		return
	}
	p := r.app.Plan()
	if p == nil {
		return
	}
	path := invite.Path(p.Config.Cluster.Interface.PrivateKeyFile)
	recs, err := invite.Load(path)
	if err != nil || len(recs) == 0 {
		return
	}
	recs = r.forgetUsed(path, recs)
	if len(invite.Expired(recs, time.Now())) > 0 {
		r.notifiedReload()
	}
}

// acceptKey is the master's side of a node replacing its invite's key: in
// the signal loop, the node's entry gets the new key if it has an open
// invite whose code carried its key. The reload that applies it follows
// the answer (appliance.Options.AcceptKey).
func (r *runner) acceptKey(n meshsync.Node, next wgtypes.Key) error {
	return r.inLoop(func() error { return r.takeKey(n, next) })
}

// takeKey writes next as n's key in the cluster file if n has an open
// invite whose code carried its key, and marks the invite used.
func (r *runner) takeKey(n meshsync.Node, next wgtypes.Key) error {
	{
		data, err := configs.ReadFile(r.path)
		if err != nil {
			return err
		}
		cl, err := configs.Parse(data, r.path)
		if err != nil {
			return fmt.Errorf("the master's file does not parse now: %w", err)
		}
		path := invite.Path(cl.Interface.PrivateKeyFile)
		recs, err := invite.Load(path)
		if err != nil {
			return err
		}
		var rec *invite.Record
		for i := range recs {
			if recs[i].Node == n.Name && recs[i].PublicKey == n.Key.String() && recs[i].Rotate {
				rec = &recs[i]
			}
		}
		switch {
		case rec == nil:
			return fmt.Errorf("%s has no open invite with this key: only a node joined by `appliance join` changes its key this way", n.Name)
		case !time.Now().Before(rec.Expires):
			return fmt.Errorf("%s's invite expired at %s", n.Name, rec.Expires.Format(time.RFC3339))
		}
		nd, err := configs.SetNodeKey(data, n.Name, next.String())
		if err != nil {
			return err
		}
		if _, err := configs.LoadData(nd, r.path, r.opts); err != nil {
			return fmt.Errorf("the file with %s's new key does not validate: %w", n.Name, err)
		}
		if err := writeKeepingMode(r.path, nd); err != nil {
			return err
		}
		if err := invite.Save(path, invite.Drop(recs, n.Name)); err != nil {
			r.log.Warn("invites: cannot update the open invites", "path", path, "err", err)
		}
		r.log.Info("invite used: the node replaced the invite's key with its own", "node", n.Name, "public_key", next.String())
		return nil
	}
}

// finishJoin runs on a node joined by a code that carried its key: once
// the master answers, it replaces that key with one made here, so that the
// code opens nothing afterwards. The new key waits in KEY.next until the
// master took it. When the master's answer is lost, the node tries the new
// key (the master may have taken it) and goes back to the code's if the
// master does not answer it. A refusal leaves the code's key in use,
// logged.
func (r *runner) finishJoin(ctx context.Context, keyFile string) {
	marker := keyFile + InvitedSuffix
	nextPath := keyFile + ".next"
	current, err := readKey(keyFile)
	if err != nil {
		r.log.Warn("join: cannot read this node's key", "err", err)
		return
	}
	next, err := readOrMakeKey(nextPath)
	if err != nil {
		r.log.Warn("join: cannot make this node's own key; the invite's key stays in use", "err", err)
		return
	}
	if next == current { // switched already: stopped before the clean-up
		r.joinDone(marker, nextPath, next)
		return
	}
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := r.app.ChangeKey(ctx, next.PublicKey())
		switch {
		case err == nil:
			select { // the master moves to the new key after this grace
			case <-ctx.Done():
				return
			case <-time.After(meshsync.KeyChangeGrace + 250*time.Millisecond):
			}
			if err := r.useKey(next, current); err != nil {
				r.log.Error("join: switching to this node's own key failed", "err", err, "fix", "run `appliance invite` for this node again on the master and `appliance join --force` here")
				return
			}
			r.joinDone(marker, nextPath, next)
			return
		case strings.Contains(err.Error(), "does not follow the master"):
			return
		case strings.Contains(err.Error(), "refused the key change"):
			r.log.Warn("join: the master keeps the invite's key for this node; it stays in use (rotate it by hand: a new key in "+keyFile+" and its public key in the master's file)", "err", err)
			os.Remove(nextPath)
			os.Remove(marker)
			return
		case strings.Contains(err.Error(), "does not answer") || errors.Is(err, context.DeadlineExceeded):
			// Lost on the way, either way: try the new key.
			if r.tryKey(ctx, next, current) {
				r.joinDone(marker, nextPath, next)
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("join: the master does not take this node's own key yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// useKey makes key this node's key, in its entry of the cluster file and
// in its key file, and reloads; was is the key it replaces.
func (r *runner) useKey(key, was wgtypes.Key) error {
	return r.inLoop(func() error {
		keyFile := r.app.Plan().Config.Cluster.Interface.PrivateKeyFile
		data, err := configs.ReadFile(r.path)
		if err != nil {
			return err
		}
		nd, err := configs.SetNodeKey(data, r.app.Plan().Config.Self.Name, key.PublicKey().String())
		if err != nil {
			return err
		}
		if err := atomicfile.Write(keyFile, []byte(key.String()+"\n"), 0o600); err != nil {
			return err
		}
		if err := writeKeepingMode(r.path, nd); err != nil {
			atomicfile.Write(keyFile, []byte(was.String()+"\n"), 0o600)
			return err
		}
		return r.notifiedReload()
	})
}

// tryKey switches to next and keeps it if the master answers it within
// keyTryFor; otherwise it goes back to current.
func (r *runner) tryKey(ctx context.Context, next, current wgtypes.Key) bool {
	if err := r.useKey(next, current); err != nil {
		return false
	}
	deadline := time.Now().Add(keyTryFor)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if r.app.ReachMaster(ctx) == nil {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	r.log.Info("join: the master does not answer this node's own key; back to the invite's key to ask again")
	if err := r.useKey(current, next); err != nil {
		r.log.Error("join: going back to the invite's key failed", "err", err)
	}
	return false
}

// keyTryFor is how long a node whose key-change answer was lost tries its
// new key: the master's switch (keyChangeGrace) and a handshake's retries.
const keyTryFor = 15 * time.Second

func (r *runner) joinDone(marker, nextPath string, key wgtypes.Key) {
	os.Remove(nextPath)
	os.Remove(marker)
	r.log.Info("join: this node's own key replaces the invite's; the join code opens nothing now", "public_key", key.PublicKey().String())
}

func readKey(path string) (wgtypes.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	return wgtypes.ParseKey(strings.TrimSpace(string(data)))
}

func readOrMakeKey(path string) (wgtypes.Key, error) {
	if data, err := os.ReadFile(path); err == nil {
		return wgtypes.ParseKey(strings.TrimSpace(string(data)))
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return k, err
	}
	return k, atomicfile.Write(path, []byte(k.String()+"\n"), 0o600)
}
