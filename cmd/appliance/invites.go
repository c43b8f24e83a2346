package main

import (
	"bytes"
	"os"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/invite"
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
		mode := os.FileMode(0o644)
		if fi, err := os.Stat(r.path); err == nil {
			mode = fi.Mode().Perm()
		}
		if err := atomicfile.Write(r.path, next, mode); err != nil {
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
			if rec.PublicKey == p.PublicKey {
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
