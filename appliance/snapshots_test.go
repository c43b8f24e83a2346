package appliance

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/snapshot"
)

func TestPlanSnapshots(t *testing.T) {
	c := newCluster(t, 3)
	servers := func(s string) string {
		return strings.Replace(s, "name: node-1\n    role: agent", "name: node-1\n    role: server", 1)
	}
	off := func(s string) string { return s + "snapshots:\n  enabled: false\n" }
	for _, tc := range []struct {
		name       string
		self       int
		edit       func(string) string
		take, keep bool
		off        string
		note       string // what check says of a lost master's machine
	}{
		{"a lone master takes them", 0, nil, true, false, "", "appliance restore on a new one"},
		{"an agent keeps them", 1, nil, false, true, "", "keeps the master's last 3 sealed snapshots"},
		{"a master with servers takes none: etcd keeps the data", 0, servers, false, false, "servers keep the datastore", "appliance promote on a server"},
		{"turned off", 0, off, false, false, "snapshots.enabled is false", "back up /var/lib/rancher/k3s/server/db/state.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := c.plan(t, 3, tc.self, tc.edit)
			sp := p.Snapshots
			if !slices.ContainsFunc(p.Notes, func(n string) bool { return strings.Contains(n, tc.note) }) {
				t.Errorf("check's notes do not say %q:\n%s", tc.note, strings.Join(p.Notes, "\n"))
			}
			if sp.Take != tc.take || sp.Keep != tc.keep || !strings.Contains(sp.Off, tc.off) || (tc.off == "") != (sp.Off == "") {
				t.Errorf("take %v keep %v off %q; want %v %v %q", sp.Take, sp.Keep, sp.Off, tc.take, tc.keep, tc.off)
			}
			if sp.Source.Datastore != "/var/lib/rancher/k3s/server/db/state.db" || sp.Store.Dir != "/var/lib/wgk3s/snapshots" || sp.Interval != 10*time.Minute {
				t.Errorf("datastore %s, store %s, interval %s", sp.Source.Datastore, sp.Store.Dir, sp.Interval)
			}
		})
	}
}

// snapRig is a master's snapshots part on a temp dir: a datastore, the
// tokens, a store, and a sync server that publishes (not listening).
type snapRig struct {
	dir  string
	plan SnapshotPlan
	s    *snapshots
	srv  *meshsync.Server
	db   *sql.DB
	logs *bytes.Buffer
}

func newSnapRig(t *testing.T, followers int) *snapRig {
	t.Helper()
	dir := t.TempDir()
	r := &snapRig{dir: dir, srv: meshsync.NewServer(slog.New(slog.DiscardHandler), nil), logs: &bytes.Buffer{}}
	os.WriteFile(filepath.Join(dir, "token"), []byte("server-secret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "agent-token"), []byte("K10agent::node:agentsecret\n"), 0o600)
	r.plan = SnapshotPlan{Take: true, Interval: time.Minute, Store: snapshot.Store{Dir: filepath.Join(dir, "snapshots"), Keep: 3},
		TokenFile: filepath.Join(dir, "token"),
		Source: snapshot.Source{Datastore: filepath.Join(dir, "k3s/server/db/state.db"), Files: map[string]string{
			snapshot.FileAgentToken: filepath.Join(dir, "agent-token"), snapshot.FileNodePassword: filepath.Join(dir, "node-password")}},
		Target: snapshot.Target{Datastore: filepath.Join(dir, "new/k3s/server/db/state.db"), AgentToken: filepath.Join(dir, "new/agent-token"),
			NodePassword: filepath.Join(dir, "new/node-password")}}
	r.s = &snapshots{plan: func() SnapshotPlan { return r.plan }, srv: r.srv, followers: followers,
		log: slog.New(slog.NewTextHandler(r.logs, nil))}
	return r
}

func (r *snapRig) write(t *testing.T, value string) {
	t.Helper()
	if r.db == nil {
		os.MkdirAll(filepath.Dir(r.plan.Source.Datastore), 0o700)
		db, err := sql.Open("sqlite", "file:"+r.plan.Source.Datastore+"?_pragma=journal_mode(WAL)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := db.Exec("CREATE TABLE kine (name TEXT, value TEXT)"); err != nil {
			t.Fatal(err)
		}
		r.db = db
	}
	if _, err := r.db.Exec("INSERT INTO kine VALUES ('/registry/configmaps/x', ?)", value); err != nil {
		t.Fatal(err)
	}
}

func (r *snapRig) copies(t *testing.T) int {
	t.Helper()
	list, err := r.plan.Store.List()
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// TestAMasterSnapshotsOnlyWhatChanged: no datastore, no snapshot; the
// first is published and kept; an unchanged datastore publishes nothing;
// a change publishes a new one.
func TestAMasterSnapshotsOnlyWhatChanged(t *testing.T) {
	r := newSnapRig(t, 2)
	ctx := context.Background()
	if r.s.take(ctx, time.Now()) {
		t.Fatal("took a snapshot of no datastore")
	}
	r.write(t, "one")
	at := time.Now()
	if !r.s.take(ctx, at) || r.copies(t) != 1 {
		t.Fatalf("first snapshot: %d copies kept; logs:\n%s", r.copies(t), r.logs)
	}
	st := r.s.status()
	if st.Role != "taking" || st.Last == nil || !st.Last.Taken.Equal(at) || st.Problem != "" {
		t.Errorf("status %+v", st)
	}
	if !r.s.take(ctx, at.Add(time.Minute)) || r.copies(t) != 1 {
		t.Errorf("an unchanged datastore: %d copies, want still 1", r.copies(t))
	}
	r.write(t, "two")
	if !r.s.take(ctx, at.Add(2*time.Minute)) || r.copies(t) != 2 {
		t.Errorf("a changed datastore: %d copies, want 2", r.copies(t))
	}
	sealed, _, _, _ := r.plan.Store.Newest()
	if bytes.Contains(sealed, []byte("two")) || bytes.Contains(sealed, []byte("agentsecret")) {
		t.Error("the copy holds the datastore or the agent token in clear")
	}
	bundle, _, err := snapshot.Open([]byte("server-secret"), sealed)
	if err != nil {
		t.Fatal(err)
	}
	files, err := snapshot.Unpack(bundle)
	if err != nil || string(files[snapshot.FileAgentToken]) != "K10agent::node:agentsecret\n" {
		t.Errorf("bundle: %v, agent token %q", err, files[snapshot.FileAgentToken])
	}
	// A master restarted publishes its newest copy as it is.
	r2 := newSnapRig(t, 2)
	r2.plan.Store, r2.plan.TokenFile = r.plan.Store, r.plan.TokenFile
	r2.s.publishNewestKept()
	if st := r2.s.status(); st.Last == nil || !st.Last.Taken.Equal(at.Add(2*time.Minute)) {
		t.Errorf("restarted: last %+v", st.Last)
	}
}

// TestFewHoldersWarnAfterTwoIntervals: a snapshot on fewer than two nodes
// is a problem, said once, two intervals after it was published.
func TestFewHoldersWarnAfterTwoIntervals(t *testing.T) {
	r := newSnapRig(t, 3)
	r.write(t, "one")
	at := time.Now()
	r.s.take(context.Background(), at)
	r.s.checkHolders(at.Add(time.Minute))
	if p := r.s.status().Problem; p != "" {
		t.Errorf("within two intervals: problem %q", p)
	}
	r.s.checkHolders(at.Add(2*time.Minute + time.Second))
	if p := r.s.status().Problem; !strings.Contains(p, "held by 0 node(s)") || !strings.Contains(p, "fewer than 2") {
		t.Errorf("after two intervals: problem %q", p)
	}
	r.s.checkHolders(at.Add(3 * time.Minute))
	if n := strings.Count(r.logs.String(), "level=WARN"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, r.logs)
	}
}

// TestARestoreTakesTheNewestCopyThatOpens: copies sealed under another
// token are passed over, the newest that opens is put in place, and the
// restore mark goes.
func TestARestoreTakesTheNewestCopyThatOpens(t *testing.T) {
	r := newSnapRig(t, 3)
	r.write(t, "the deployment")
	bundle, err := snapshot.Take(context.Background(), r.plan.Source, r.dir)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	seal := func(token string, at time.Time) []byte {
		s, err := snapshot.Seal([]byte(token), bundle, at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	os.MkdirAll(r.plan.Store.Dir, 0o700)
	os.WriteFile(filepath.Join(r.plan.Store.Dir, restoreMarker), nil, 0o600)
	if !r.plan.RestoreRequested() {
		t.Fatal("the mark is not seen")
	}
	offers := []meshsync.Offer{
		{Node: "old", Sealed: seal("server-secret", base)},
		{Node: "forged", Sealed: seal("another-secret", base.Add(2*time.Minute))},
		{Node: "newest", Sealed: seal("server-secret", base.Add(time.Minute))},
		{Node: "none"},
	}
	done, err := r.s.restoreNewest(offers, []byte("server-secret"), map[string]bool{})
	if !done || err != nil {
		t.Fatalf("restore: %v %v; logs:\n%s", done, err, r.logs)
	}
	if !strings.Contains(r.logs.String(), "node=forged") || !strings.Contains(r.logs.String(), "from=newest") {
		t.Errorf("logs:\n%s", r.logs)
	}
	db, err := sql.Open("sqlite", "file:"+r.plan.Target.Datastore+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SELECT value FROM kine").Scan(&v); err != nil || v != "the deployment" {
		t.Errorf("restored datastore: %q, %v", v, err)
	}
	if got, _ := os.ReadFile(r.plan.Target.AgentToken); string(got) != "K10agent::node:agentsecret\n" {
		t.Errorf("restored agent token %q", got)
	}
	if r.plan.RestoreRequested() {
		t.Error("the restore mark is still there")
	}
	if _, err := r.s.restoreNewest(offers, []byte("server-secret"), map[string]bool{}); !errors.Is(err, snapshot.ErrDatastoreExists) {
		t.Errorf("a second restore over the datastore: %v", err)
	}
}

// TestRestoreRefuses: restore changes nothing on a machine that is not the
// master's, or that has a datastore, or without the token.
func TestRestoreRefuses(t *testing.T) {
	c := newCluster(t, 2)
	dir := t.TempDir()
	key := filepath.Join(dir, "private.key")
	snaps := filepath.Join(dir, "snapshots")
	data := filepath.Join(dir, "k3s")
	c.extraInterface = "  private_key_file: " + key + "\n"
	c.extra = fmt.Sprintf("  token_file: %s/token\n  server_args: [\"--data-dir=%s\"]\nsnapshots:\n  dir: %s\n", dir, data, snaps)
	path := filepath.Join(dir, "wgk3s.yaml")
	os.WriteFile(path, []byte(c.text(2, nil)), 0o644)
	req := RestoreRequest{Config: path, Socket: filepath.Join(dir, "status.sock")}
	var out, errOut bytes.Buffer
	os.WriteFile(key, []byte(c.keys[1].String()+"\n"), 0o600)
	if err := Restore(req, &out, &errOut); err == nil || !strings.Contains(err.Error(), "restore brings the master back") {
		t.Errorf("on an agent's machine: %v", err)
	}
	os.WriteFile(key, []byte(c.keys[0].String()+"\n"), 0o600)
	if err := Restore(req, &out, &errOut); err == nil || !strings.Contains(err.Error(), "k3s.token_file") {
		t.Errorf("without the token: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("server-secret\n"), 0o600)
	os.MkdirAll(filepath.Join(data, "server/db"), 0o700)
	os.WriteFile(filepath.Join(data, "server/db/state.db"), nil, 0o600)
	if err := Restore(req, &out, &errOut); !errors.Is(err, snapshot.ErrDatastoreExists) {
		t.Errorf("over a datastore: %v", err)
	}
	if _, err := os.Stat(filepath.Join(snaps, restoreMarker)); err == nil {
		t.Error("a refused restore left its mark")
	}
	os.RemoveAll(data)
	if err := Restore(req, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(snaps, restoreMarker)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the mark: %v", err)
	}
	if !strings.Contains(out.String(), "systemctl start wgk3s") {
		t.Errorf("stdout %q", out.String())
	}
}
