package appliance

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/snapshot"
	"github.com/wgk3s/wgk3s/status"
)

// A lone master's datastore (k3s on SQLite) lives on its disk alone. The
// master takes a snapshot of it every interval when it changed (package
// snapshot), sealed under the server token, and publishes it over the
// sync; every other node keeps the last few. `appliance restore` on a new
// machine makes the master, at its next start, ask the nodes for their
// newest copies before it starts k3s.

// NodePasswordFile is where k3s keeps this node's own node password.
const NodePasswordFile = "/etc/rancher/node/password"

// restoreMarker is the file `appliance restore` leaves in the snapshot
// directory: the master restores from the nodes at its next start.
const restoreMarker = "restore-requested"

// restorePatience is how long a restoring master waits for the nodes that
// have not offered yet once a copy has arrived: a node that is down must
// not hold the cluster, but the newest copy may be on any node.
const restorePatience = time.Minute

// SnapshotPlan is what this node does with the master's datastore.
type SnapshotPlan struct {
	// Take: a lone master (no servers) takes and publishes snapshots.
	Take bool
	// Keep: every other node keeps the master's.
	Keep bool
	// Off says why neither, or why a master takes none.
	Off      string
	Interval time.Duration
	Store    snapshot.Store
	Source   snapshot.Source
	// TokenFile is the server token the copies are sealed with.
	TokenFile string
	// Target is where a restore puts the files.
	Target snapshot.Target
}

// planSnapshots works out the node's part from the file.
func planSnapshots(cfg *configs.Config, k3sArgs []string) SnapshotPlan {
	cl := cfg.Cluster
	dir := cl.Snapshots.Dir
	datastore := filepath.Join(k3sDataDir(k3sArgs), "server", "db", "state.db")
	sp := SnapshotPlan{Interval: cl.Snapshots.Interval, Store: snapshot.Store{Dir: dir, Keep: cl.Snapshots.Keep}, TokenFile: cl.K3s.TokenFile,
		Source: snapshot.Source{Datastore: datastore, Files: map[string]string{
			snapshot.FileAgentToken: cl.K3s.AgentTokenFile, snapshot.FileNodePassword: NodePasswordFile}},
		Target: snapshot.Target{Datastore: datastore, AgentToken: cl.K3s.AgentTokenFile, NodePassword: NodePasswordFile}}
	switch {
	case !cl.Snapshots.Enabled:
		sp.Off = "snapshots.enabled is false: the master's datastore is on its disk alone"
	case !cl.Sync:
		sp.Off = "sync is false: snapshots travel over it"
	case len(cl.Servers()) > 1:
		sp.Off = "the servers keep the datastore (etcd, on each of them); when the master's machine is lost, appliance promote on a server"
	case cfg.Self.Role != configs.RoleMaster:
		sp.Keep = true
	default:
		sp.Take = true
	}
	return sp
}

// note says, for check, what becomes of the datastore when the master's
// machine is lost.
func (sp SnapshotPlan) note(cfg *configs.Config) string {
	cl := cfg.Cluster
	switch {
	case sp.Take:
		return fmt.Sprintf("snapshots: this lone master takes one of its datastore every %s when it changed, sealed under the server token, and the %d other node(s) keep the last %d in %s; "+
			"if this machine is lost: appliance restore on a new one with %s and %s kept off this machine (at most %s of changes lost)",
			sp.Interval, len(cl.Nodes)-1, sp.Store.Keep, sp.Store.Dir, cl.Interface.PrivateKeyFile, sp.TokenFile, sp.Interval)
	case sp.Keep:
		return fmt.Sprintf("snapshots: this node keeps the master's last %d sealed snapshots in %s (unreadable without the server token)", sp.Store.Keep, sp.Store.Dir)
	case len(cl.Servers()) > 1:
		return "snapshots: none; " + sp.Off
	default:
		return "snapshots: none (" + sp.Off + "); the master's datastore is on its disk alone: back up " + sp.Source.Datastore + " and " + sp.TokenFile
	}
}

// RestoreRequested says whether `appliance restore` asked this master to
// restore from the nodes at its start.
func (sp SnapshotPlan) RestoreRequested() bool {
	_, err := os.Stat(filepath.Join(sp.Store.Dir, restoreMarker))
	return err == nil
}

// snapshots is a node's running part: the master's taker or a follower's
// keeper, and what status shows of it.
type snapshots struct {
	// plan is the running plan's (a reload may change the interval, the
	// number kept, the directory).
	plan func() SnapshotPlan
	log  *slog.Logger
	// srv publishes (the master's); nil elsewhere.
	srv *meshsync.Server
	// followers is how many nodes could hold a copy.
	followers int

	mu        sync.Mutex
	last      *status.SnapshotCopy
	bundleSum [32]byte // of the last bundle published
	published time.Time
	checked   time.Time
	problem   string    // taking (or restoring) fails
	spread    string    // the newest copy is on too few nodes
	warned    time.Time // the published snapshot warned about
	restore   *status.Restore
	held      string // a keeper's newest copy's revision
	kept      int
}

func (s *snapshots) cur() SnapshotPlan { return s.plan() }

// status is what `appliance status` shows.
func (s *snapshots) status() *status.Snapshots {
	plan := s.cur() // before s.mu: the plan is read under the App's lock
	var holders []string
	if plan.Take && s.srv != nil {
		holders = s.srv.SnapshotHolders()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &status.Snapshots{Role: "keeping", Off: plan.Off, IntervalSeconds: plan.Interval.Seconds(), Last: s.last, Holders: holders,
		Kept: s.kept, Checked: s.checked, Problem: strings.Join(slices.DeleteFunc([]string{s.problem, s.spread}, func(p string) bool { return p == "" }), "; "),
		Restore: s.restore}
	switch {
	case plan.Take:
		st.Role = "taking"
	case !plan.Keep:
		st.Role = "off"
	}
	return st
}

// runTaker takes a snapshot every interval when the datastore changed,
// and checks every half minute that copies reached two nodes.
func (s *snapshots) runTaker(ctx context.Context) error {
	s.publishNewestKept()
	check := min(s.cur().Interval, 30*time.Second)
	var next time.Time
	for {
		now := time.Now()
		if !s.cur().Take { // turned off, or servers added, by a reload
			next = now.Add(check)
		} else if !now.Before(next) {
			if s.take(ctx, now) {
				next = now.Add(s.cur().Interval)
			} else {
				next = now.Add(check) // no datastore yet, or a failure: soon again
			}
		}
		s.checkHolders(now)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(check, time.Until(next))):
		}
	}
}

// publishNewestKept publishes the master's own newest copy at its start,
// so that the nodes holding it do not fetch it again.
func (s *snapshots) publishNewestKept() {
	sealed, info, ok, err := s.cur().Store.Newest()
	if err != nil || !ok {
		return
	}
	token, err := configs.ReadToken(s.cur().TokenFile)
	if err != nil {
		return
	}
	bundle, _, err := snapshot.Open([]byte(token), sealed)
	if err != nil {
		s.log.Warn("snapshots: this master's newest copy does not open with its token; the next is taken anew", "taken", info.Taken, "err", err)
		return
	}
	s.mu.Lock()
	// published: now, so that the nodes get two intervals from this start
	s.bundleSum, s.last, s.published = sha256.Sum256(bundle), &status.SnapshotCopy{Taken: info.Taken, Bytes: info.Size}, time.Now()
	s.mu.Unlock()
	s.srv.SetSnapshot(sealed)
}

// take takes a snapshot and publishes it when the datastore changed; it
// returns false when there is no datastore yet or taking failed.
func (s *snapshots) take(ctx context.Context, now time.Time) bool {
	if _, err := os.Stat(s.cur().Source.Datastore); errors.Is(err, os.ErrNotExist) {
		return false // k3s has not made it yet (or a restore is under way)
	}
	began := time.Now()
	bundle, err := snapshot.Take(ctx, s.cur().Source, s.cur().Store.Dir)
	if err == nil {
		err = s.publish(bundle, now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = now
	if err != nil {
		if s.problem == "" {
			s.log.Warn("snapshots: cannot take a snapshot of the datastore; trying again", "err", err)
		}
		s.problem = "cannot take a snapshot: " + err.Error()
		return false
	}
	s.problem = ""
	s.log.Debug("snapshots: datastore checked", "took", time.Since(began).Round(time.Millisecond))
	return true
}

// publish seals and publishes bundle unless it is the last one published.
func (s *snapshots) publish(bundle []byte, now time.Time) error {
	sum := sha256.Sum256(bundle)
	s.mu.Lock()
	same := s.last != nil && sum == s.bundleSum
	s.mu.Unlock()
	if same {
		return nil
	}
	token, err := configs.ReadToken(s.cur().TokenFile)
	if err != nil {
		return err
	}
	sealed, err := snapshot.Seal([]byte(token), bundle, now)
	if err != nil {
		return err
	}
	if _, err := s.cur().Store.Put(sealed); err != nil {
		return fmt.Errorf("keeping the master's own copy in %s: %w", s.cur().Store.Dir, err)
	}
	s.srv.SetSnapshot(sealed)
	s.mu.Lock()
	s.bundleSum, s.last, s.published, s.problem = sum, &status.SnapshotCopy{Taken: now, Bytes: len(sealed)}, now, ""
	s.mu.Unlock()
	s.log.Info("snapshots: took a snapshot of the datastore and handed it to the nodes", "bytes", len(sealed), "datastore", s.cur().Source.Datastore)
	return nil
}

// checkHolders warns when the newest snapshot has not reached two nodes
// (or every node, in a cluster of fewer) within two intervals.
func (s *snapshots) checkHolders(now time.Time) {
	holders := s.srv.SnapshotHolders()
	need := min(2, s.followers)
	interval := s.cur().Interval
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil || len(holders) >= need {
		if s.spread != "" {
			s.spread = ""
			s.log.Info("snapshots: the newest snapshot reached the nodes", "holders", holders)
		}
		return
	}
	if now.Sub(s.published) < 2*interval || s.warned.Equal(s.published) {
		return
	}
	s.warned = s.published
	s.spread = fmt.Sprintf("the snapshot taken %s ago is held by %d node(s) (%s), fewer than %d: if this machine is lost, so are the changes since; check the nodes' sync (appliance doctor)",
		now.Sub(s.published).Round(time.Second), len(holders), strings.Join(holders, ", "), need)
	s.log.Warn("snapshots: " + s.spread)
}

// keeper is a follower's store, as meshsync hands it copies.
type keeper struct{ s *snapshots }

func (k keeper) Held() string {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	return k.s.held
}

func (k keeper) Keep(sealed []byte) error {
	kept, err := k.s.cur().Store.Put(sealed)
	if err != nil {
		return err
	}
	info, _ := snapshot.Peek(sealed)
	k.s.note()
	if kept {
		k.s.log.Info("snapshots: keeping the master's new snapshot (sealed: this node cannot read it)", "taken", info.Taken, "bytes", info.Size)
	}
	return nil
}

func (k keeper) Newest() ([]byte, error) {
	sealed, _, _, err := k.s.cur().Store.Newest()
	return sealed, err
}

// note reads the store for status and Held.
func (s *snapshots) note() {
	store := s.cur().Store
	list, _ := store.List()
	sealed, info, ok, _ := store.Newest()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept, s.last, s.held = len(list), nil, ""
	if ok {
		s.last, s.held = &status.SnapshotCopy{Taken: info.Taken, Bytes: info.Size}, meshsync.Revision(sealed)
	}
}

// runKeeper follows the master's snapshots.
func (s *snapshots) runKeeper(c *meshsync.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		s.note()
		return c.FollowSnapshots(ctx, keeper{s})
	}
}

// restoreFromNodes runs before k3s's first start on a master that
// `appliance restore` marked: it asks every node for its newest copy,
// puts the newest that opens with the token in place, and returns; k3s
// then starts from it. It waits as long as it takes: k3s must not start
// an empty cluster beside the nodes' data.
func (s *snapshots) restoreFromNodes(ctx context.Context, srv func(context.Context) (*meshsync.Server, error)) error {
	server, err := srv(ctx)
	if err != nil {
		return err
	}
	token, err := configs.ReadToken(s.cur().TokenFile)
	if err != nil {
		return fmt.Errorf("restore: the server token the copies are sealed with: %w", err)
	}
	server.Restoring()
	defer server.Restored()
	s.log.Info("restore: asking every node for its newest copy of the datastore")
	tried := map[string]bool{}
	for {
		offers, err := server.AwaitOffers(ctx, restorePatience, func(offers []meshsync.Offer, missing []string) {
			r := &status.Restore{Waiting: missing}
			for _, o := range offers {
				r.Offered = append(r.Offered, o.Node)
			}
			s.mu.Lock()
			s.restore = r
			s.mu.Unlock()
		})
		if err != nil {
			return err
		}
		done, err := s.restoreNewest(offers, []byte(token), tried)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		problem := "no node offered a copy that opens with this token yet: check k3s.token_file holds the server token you kept; to start an empty cluster instead, remove " +
			filepath.Join(s.cur().Store.Dir, restoreMarker) + " and restart"
		s.mu.Lock()
		first := s.problem != problem
		s.problem = problem
		s.mu.Unlock()
		if first {
			s.log.Error("restore: " + problem)
		}
		// Each node offers once; a node that restarts (its copy fixed, or
		// back up) offers again: that is what is looked at next.
		_, _, next := server.Offers()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-next:
		}
	}
}

// restoreNewest restores the newest copy offered that opens; tried are
// the copies that did not (by node and time), not opened again.
func (s *snapshots) restoreNewest(offers []meshsync.Offer, token []byte, tried map[string]bool) (bool, error) {
	type copyOf struct {
		node   string
		sealed []byte
		info   snapshot.Info
	}
	var copies []copyOf
	for _, o := range offers {
		if info, err := snapshot.Peek(o.Sealed); err == nil {
			copies = append(copies, copyOf{o.Node, o.Sealed, info})
		}
	}
	slices.SortFunc(copies, func(a, b copyOf) int { return b.info.Taken.Compare(a.info.Taken) })
	for _, c := range copies {
		id := c.node + "@" + c.info.Taken.String()
		if tried[id] {
			continue
		}
		tried[id] = true
		bundle, _, err := snapshot.Open(token, c.sealed)
		if err != nil {
			s.log.Warn("restore: a node's copy does not open with this token; trying the next", "node", c.node, "taken", c.info.Taken, "err", err)
			continue
		}
		files, err := snapshot.Unpack(bundle)
		if err == nil {
			err = snapshot.Restore(files, s.cur().Target)
		}
		if err != nil {
			return false, fmt.Errorf("restore: the copy from %s: %w", c.node, err)
		}
		if _, err := s.cur().Store.Put(c.sealed); err != nil {
			s.log.Warn("restore: cannot keep the restored copy", "err", err)
		}
		os.Remove(filepath.Join(s.cur().Store.Dir, restoreMarker))
		s.mu.Lock()
		s.restore, s.problem = nil, ""
		s.mu.Unlock()
		s.log.Info("restore: the datastore is back; starting k3s from it", "from", c.node, "taken", c.info.Taken,
			"age", time.Since(c.info.Taken).Round(time.Second), "datastore", s.cur().Target.Datastore)
		return true, nil
	}
	return false, nil
}
