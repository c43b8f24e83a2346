package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// handlerTransport carries a follower's requests to the master's handler
// in-process, as if they came from the follower's mesh address.
type handlerTransport struct {
	h    http.Handler
	from string
}

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.RemoteAddr, req.RequestURI = t.from, req.URL.RequestURI()
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, req)
	return w.Result(), nil
}

// fakeFollower is an agent's side of the sync, recording into the
// master's journal what it took or refused.
type fakeFollower struct {
	name   string
	j      *journal
	mu     sync.Mutex
	data   []byte
	master wgtypes.Key // the master's public key in the file it runs
	next   wgtypes.Key // ... in the file it takes next
	refuse bool
}

func (f *fakeFollower) have() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return meshsync.Revision(f.data)
}

func (f *fakeFollower) apply(data []byte, confirm func(staging bool) error) error {
	if f.refuse {
		f.j.add("%s refused", f.name)
		return errors.New("it no longer lists this node")
	}
	if err := confirm(false); err != nil {
		return err
	}
	f.mu.Lock()
	f.data, f.master = data, f.next
	f.mu.Unlock()
	f.j.add("%s took", f.name)
	return nil
}

// follow runs a follower of the App's sync server for node i of c.
func follow(t *testing.T, a *App, f *fakes, c *cluster, i int, data []byte) *fakeFollower {
	t.Helper()
	ff := &fakeFollower{name: c.names[i], j: &f.j, data: data, master: c.keys[0].PublicKey(), next: c.keys[0].PublicKey()}
	cl := &meshsync.Client{Master: a.Plan().Sync.Master, Log: slog.New(slog.DiscardHandler), Have: ff.have, Apply: ff.apply, Retry: 20 * time.Millisecond,
		Transport: handlerTransport{a.syncServer.Handler(), fmt.Sprintf("192.168.2.%d:40000", i+1)},
		Keys: func() (wgtypes.Key, wgtypes.Key) {
			ff.mu.Lock()
			defer ff.mu.Unlock()
			return c.keys[i], ff.master
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ff
}

// index returns where the first event starting with prefix is, or -1.
func index(events []string, prefix string) int {
	return slices.IndexFunc(events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

// TestAMasterKeyChangeIsHandedOverFirst: the file with the master's new
// key reaches every follower before wg0 switches to the new key, so no
// follower is cut off; afterwards they authenticate with the new key.
func TestAMasterKeyChangeIsHandedOverFirst(t *testing.T) {
	f := newFakes()
	a := newApp(t, f)
	c := newCluster(t, 3)
	p := c.plan(t, 3, 0, nil)
	if err := a.Start(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	followers := []*fakeFollower{follow(t, a, f, c, 1, p.Config.Cluster.Data), follow(t, a, f, c, 2, p.Config.Cluster.Data)}
	rev := meshsync.Revision(p.Config.Cluster.Data)
	if missing := a.syncServer.AwaitReceived(keysOf(p.Sync.Followers), rev, 10*time.Second); missing != nil {
		t.Fatalf("followers not waiting: %v", missing)
	}
	newKey, _ := wgtypes.GeneratePrivateKey()
	c.keys[0] = newKey
	for _, ff := range followers {
		ff.next = newKey.PublicKey()
	}
	next := c.plan(t, 3, 0, nil)
	n := len(f.j.all())
	if err := a.Reload(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	events := f.j.since(n)
	switchAt := index(events, "wireguard apply")
	for _, ff := range followers {
		if at := index(events, ff.name+" took"); at < 0 || at > switchAt {
			t.Errorf("%s took the file at %d, wg0 switched keys at %d: %q", ff.name, at, switchAt, events)
		}
	}
	nextRev := meshsync.Revision(next.Config.Cluster.Data)
	if missing := a.syncServer.AwaitReceived(keysOf(next.Sync.Followers), nextRev, 10*time.Second); missing != nil {
		t.Errorf("after the switch, these followers do not ask the master with its new key: %v", missing)
	}
	for _, ff := range followers {
		if ff.have() != nextRev {
			t.Errorf("%s runs %s", ff.name, ff.have())
		}
	}
}

// syncLog is a logger whose output a test reads.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestAMasterKeyChangeNamesTheNodesItCutsOff: a follower that is away
// does not hold the reload for long, and the log says which nodes must
// be given the file by hand.
func TestAMasterKeyChangeNamesTheNodesItCutsOff(t *testing.T) {
	f := newFakes()
	var logs syncLog
	a := New(Options{Parts: f.parts(), StatusSocket: filepath.Join(t.TempDir(), "status.sock"), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() { a.Stop() })
	a.keyHandOverWait = 50 * time.Millisecond
	c := newCluster(t, 3)
	if err := a.Start(context.Background(), c.plan(t, 3, 0, nil)); err != nil {
		t.Fatal(err)
	}
	c.keys[0], _ = wgtypes.GeneratePrivateKey()
	if err := a.Reload(context.Background(), c.plan(t, 3, 0, nil)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "did not receive the master's new key") || !strings.Contains(logs.String(), "node-1, node-2") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// TestADroppedNodeGetsTheFileBeforeItsTunnelGoes: so that it can say it
// was dropped.
func TestADroppedNodeGetsTheFileBeforeItsTunnelGoes(t *testing.T) {
	f := newFakes()
	a := newApp(t, f)
	c := newCluster(t, 3)
	p := c.plan(t, 3, 0, nil)
	if err := a.Start(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	ff := follow(t, a, f, c, 2, p.Config.Cluster.Data)
	ff.refuse = true
	if missing := a.syncServer.AwaitReceived(keysOf(p.Sync.Followers[1:]), meshsync.Revision(p.Config.Cluster.Data), 10*time.Second); missing != nil {
		t.Fatalf("follower not waiting: %v", missing)
	}
	n := len(f.j.all())
	if err := a.Reload(context.Background(), c.plan(t, 2, 0, nil)); err != nil {
		t.Fatal(err)
	}
	events := f.j.since(n)
	if at, switchAt := index(events, "node-2 refused"), index(events, "wireguard apply"); at < 0 || at > switchAt {
		t.Errorf("node-2 refused at %d, its tunnel went at %d: %q", at, switchAt, events)
	}
}

// syncFixture is a node's cluster file on disk with real keys and tokens,
// for TakeSynced.
type syncFixture struct {
	dir, path string
	c         *cluster
	file      ConfigFile
}

func newSyncFixture(t *testing.T) *syncFixture {
	t.Helper()
	fx := &syncFixture{dir: t.TempDir(), c: newCluster(t, 3)}
	fx.path = filepath.Join(fx.dir, "wgk3s.yaml")
	key := filepath.Join(fx.dir, "private.key")
	os.WriteFile(key, []byte(fx.c.keys[1].String()+"\n"), 0o600)
	os.WriteFile(filepath.Join(fx.dir, "agent-token"), []byte("agent-secret\n"), 0o600)
	fx.c.extra = fmt.Sprintf("  token_file: %s/token\n  agent_token_file: %s/agent-token\n", fx.dir, fx.dir)
	fx.c.extraInterface = "  private_key_file: " + key + "\n"
	os.WriteFile(fx.path, []byte(fx.c.text(3, nil)), 0o644)
	fx.file = ConfigFile{Path: fx.path, Host: fakeHost{}}
	return fx
}

// running is the plan node-1 runs from its file.
func (fx *syncFixture) running(t *testing.T) *Plan {
	t.Helper()
	cfg, err := configs.Load(fx.path, configs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return NewPlan(cfg, fakeHost{})
}

func TestTakeSynced(t *testing.T) {
	confirmed := func(bool) error { return nil }
	tests := []struct {
		name     string
		edit     func(fx *syncFixture) string // the master's file
		confirm  func(bool) error
		reload   error
		want     string // in the error; "" for taken
		staged   bool
		written  bool // the master's file is in place afterwards
		reloaded bool
	}{
		{name: "a new node", edit: func(fx *syncFixture) string { return fx.c.text(3, nil) + "  server_args: [--disable=traefik]\n" },
			confirm: confirmed, written: true, reloaded: true},
		{name: "drops this node", edit: func(fx *syncFixture) string {
			return fx.c.text(3, func(s string) string { return strings.Replace(s, "name: node-1", "name: node-9", 1) })
		}, confirm: confirmed, want: "it names this node (public key"},
		{name: "removed", edit: func(fx *syncFixture) string { return fx.c.text(1, nil) }, confirm: confirmed,
			want: "it no longer lists this node (node-1, public key"},
		{name: "another key for this node", edit: func(fx *syncFixture) string {
			k, _ := wgtypes.GeneratePrivateKey()
			return strings.Replace(fx.c.text(3, nil), fx.c.keys[1].PublicKey().String(), k.PublicKey().String(), 1)
		}, confirm: confirmed, want: "install the new private key here first"},
		{name: "invalid", edit: func(fx *syncFixture) string {
			return strings.Replace(fx.c.text(3, nil), "listen_port: 5418", "listen_port: 5418\n  mtu: 99", 1)
		}, confirm: confirmed, want: "the master's cluster file (revision "},
		{name: "needs a restart", edit: func(fx *syncFixture) string {
			return strings.Replace(fx.c.text(3, nil), "listen_port: 5418", "listen_port: 5418\n  mode: userspace", 1)
		}, confirm: confirmed, want: "interface.mode auto -> userspace needs a restart", staged: true, written: true},
		{name: "no longer served", edit: func(fx *syncFixture) string { return fx.c.text(2, nil) },
			confirm: func(bool) error { return meshsync.ErrNotCurrent }, want: "no longer serves"},
		{name: "the reload fails", edit: func(fx *syncFixture) string { return fx.c.text(2, nil) },
			confirm: confirmed, reload: errors.New("boom"), want: "boom", reloaded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newSyncFixture(t)
			running := fx.running(t)
			before, _ := os.ReadFile(fx.path)
			data := []byte(tt.edit(fx))
			reloaded := false
			err := fx.file.TakeSynced(running, data, tt.confirm, func() error {
				reloaded = true
				got, _ := os.ReadFile(fx.path)
				if !bytes.Equal(got, data) {
					t.Error("the reload does not see the master's file")
				}
				return tt.reload
			})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("TakeSynced = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("TakeSynced = %v, want %q", err, tt.want)
			}
			if errors.Is(err, meshsync.ErrStaged) != tt.staged {
				t.Errorf("staged = %v, want %v (%v)", errors.Is(err, meshsync.ErrStaged), tt.staged, err)
			}
			if err != nil && strings.Contains(err.Error(), ".sync") {
				t.Errorf("the message names a temporary file: %v", err)
			}
			if reloaded != tt.reloaded {
				t.Errorf("reloaded = %v", reloaded)
			}
			now, _ := os.ReadFile(fx.path)
			if tt.written != bytes.Equal(now, data) || !tt.written && !bytes.Equal(now, before) {
				t.Errorf("the cluster file after: written=%v, want %v", bytes.Equal(now, data), tt.written)
			}
			if prev, err := os.ReadFile(fx.path + ".previous"); tt.written && !bytes.Equal(prev, before) {
				t.Errorf("the previous file was not kept: %v", err)
			}
			left, _ := filepath.Glob(filepath.Join(fx.dir, ".*"))
			if len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}

// TestAServersOwnKeyChangeIsNotTheMasters: a server (joined by a code)
// that switches to its own key serves the sync too; that is not the
// master's rotation: the reload neither waits for every node nor tells
// the operator to copy the file to the master.
func TestAServersOwnKeyChangeIsNotTheMasters(t *testing.T) {
	f := newFakes()
	var logs syncLog
	a := New(Options{Parts: f.parts(), StatusSocket: filepath.Join(t.TempDir(), "status.sock"), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(func() { a.Stop() })
	a.keyHandOverWait = 10 * time.Second // would show as a 10 s reload
	c := newCluster(t, 3)
	server := func(s string) string {
		return strings.Replace(s, "name: node-1\n    role: agent", "name: node-1\n    role: server", 1)
	}
	if err := a.Start(context.Background(), c.plan(t, 3, 1, server)); err != nil {
		t.Fatal(err)
	}
	if a.syncServer == nil || a.syncClient == nil {
		t.Fatal("a server should follow and serve")
	}
	c.keys[1], _ = wgtypes.GeneratePrivateKey()
	began := time.Now()
	if err := a.Reload(context.Background(), c.plan(t, 3, 1, server)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the server's own key change held the reload %s", took)
	}
	if strings.Contains(logs.String(), "master's new key") || strings.Contains(logs.String(), "this master's key changes") {
		t.Errorf("a server's key change was taken for the master's rotation:\n%s", logs.String())
	}
}
