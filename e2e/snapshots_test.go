//go:build linux

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/snapshot"
	"github.com/wgk3s/wgk3s/status"
)

// dataDir is the stand-in's data directory on the master: its SQLite
// datastore is DATA-DIR/server/db/state.db, as k3s's on kine.
const dataDir = "/run/wgk3s/k3s"

// copiesOn lists the sealed copies a node keeps, newest first.
func copiesOn(t *testing.T, n *node) []snapshot.Info {
	t.Helper()
	list, err := snapshot.Store{Dir: n.Srv.HostPath(testnet.SnapshotDir)}.List()
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func statusOf(t *testing.T, n *node) status.Report {
	t.Helper()
	var r status.Report
	out := n.Srv.Run(applianceBin, "status", "--json")
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s status --json: %v\n%s", n.Name, err, out)
	}
	return r
}

// datastoreGet reads a key of the master's datastore with the stand-in.
func datastoreGet(n *node, key string) string {
	out, _ := n.Srv.Try(k3sBin, "datastore", dataDir, "get", key)
	return strings.TrimSpace(out)
}

// TestALoneMastersDataOutlivesItsMachine: a master without servers hands
// sealed snapshots of its datastore to the agents, a new one after each
// change, which the agents cannot read; when its machine is lost, a new
// machine with another public address, given the cluster file, the
// master's key and the server token, gets the newest copy back from the
// agents with `appliance restore`, and the agents join it untouched.
func TestALoneMastersDataOutlivesItsMachine(t *testing.T) {
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	var nodes []*node
	for i, spec := range []struct{ name, role, addr string }{
		{"k3s-master", "master", "192.168.2.1"},
		{"k3s-node-1", "agent", "192.168.2.2"},
		{"k3s-node-2", "agent", "192.168.2.3"},
	} {
		nodes = append(nodes, newNode(t, net.AddServer(strings.TrimPrefix(spec.name, "k3s-"), i+1), spec.name, spec.role, spec.addr))
	}
	m, n1, n2 := nodes[0], nodes[1], nodes[2]
	agents := []*node{n1, n2}
	edit := func(s string) string {
		s = strings.Replace(s, "  dir: "+testnet.SnapshotDir+"\n", "  dir: "+testnet.SnapshotDir+"\n  interval: 10s\n", 1)
		return strings.Replace(s, "k3s:\n", "k3s:\n  server_args: [\"--data-dir="+dataDir+"\"]\n", 1)
	}
	// The datastore holds an object before the master starts.
	m.Srv.Run(k3sBin, "datastore", dataDir, "put", "/registry/configmaps/default/app", "one")
	for _, n := range nodes {
		n.WriteConfig(nodes, edit)
		n.Start(t)
	}
	waitCopies := func(t *testing.T, want int) {
		t.Helper()
		for _, a := range agents {
			if !testnet.Eventually(60*time.Second, func() bool { return len(copiesOn(t, a)) >= want }) {
				t.Fatalf("%s keeps %d copies, want %d:\n%s", a.Name, len(copiesOn(t, a)), want, m.Proc.Output())
			}
		}
	}
	// open opens an agent's newest copy with tok.
	open := func(t *testing.T, a *node, tok string) (map[string][]byte, error) {
		t.Helper()
		sealed, _, ok, err := snapshot.Store{Dir: a.Srv.HostPath(testnet.SnapshotDir)}.Newest()
		if err != nil || !ok {
			t.Fatalf("%s: no copy (%v)", a.Name, err)
		}
		bundle, _, err := snapshot.Open([]byte(tok), sealed)
		if err != nil {
			return nil, err
		}
		return snapshot.Unpack(bundle)
	}

	t.Run("a copy reaches both agents, sealed: they cannot read it", func(t *testing.T) {
		waitCopies(t, 1)
		if !testnet.Eventually(30*time.Second, func() bool {
			sn := statusOf(t, m).Snapshots
			return sn != nil && slices.Equal(sn.Holders, []string{"k3s-node-1", "k3s-node-2"})
		}) {
			t.Fatalf("the master's status: %+v", statusOf(t, m).Snapshots)
		}
		for _, a := range agents {
			if _, err := os.Stat(a.Srv.HostPath(tokenPath)); err == nil {
				t.Fatalf("%s holds the server token", a.Name)
			}
			if _, err := open(t, a, agentToken); err == nil {
				t.Errorf("%s's copy opens with the agent token it holds", a.Name)
			}
			if sn := statusOf(t, a).Snapshots; sn == nil || sn.Role != "keeping" || sn.Kept != 1 {
				t.Errorf("%s's status: %+v", a.Name, sn)
			}
		}
		if out := m.Srv.Run(applianceBin, "status"); !strings.Contains(out, "held by 2 node(s): k3s-node-1, k3s-node-2") {
			t.Errorf("status does not say who holds the snapshot:\n%s", out)
		}
	})

	t.Run("a change makes a new copy on both agents", func(t *testing.T) {
		m.Srv.Run(k3sBin, "datastore", dataDir, "put", "/registry/configmaps/default/app", "two")
		waitCopies(t, 2)
		files, err := open(t, n2, token)
		if err != nil {
			t.Fatal(err)
		}
		if files[snapshot.FileAgentToken] == nil || !strings.Contains(string(files[snapshot.FileAgentToken]), agentToken) {
			t.Errorf("the copy does not keep the agent token")
		}
	})

	t.Run("the master's machine is lost; restore on a new machine brings the data back", func(t *testing.T) {
		m.Stop(t)
		m.Srv.SetUplink(false) // gone, disks and all
		srv := net.AddServer("master-2", 4)
		nm := &testnet.Node{Srv: srv, Bin: bins(), Name: m.Name, Role: "master", Address: m.Address, Key: m.Key, Endpoint: m.Endpoint}
		// What the operator kept: the master's key and the server token;
		// the cluster file comes from any node.
		srv.WriteFile(testnet.KeyPath, []byte(m.Key.String()+"\n"), 0o600)
		srv.WriteFile(tokenPath, []byte(token+"\n"), 0o600)
		file, err := os.ReadFile(n1.Srv.HostPath(configPath))
		if err != nil {
			t.Fatal(err)
		}
		srv.WriteFile(configPath, file, 0o644)
		if err := os.MkdirAll(srv.HostPath(standinDir), 0o755); err != nil {
			t.Fatal(err)
		}
		out := srv.Run(applianceBin, "restore", "--config", configPath)
		if !strings.Contains(out, "systemctl start wgk3s") {
			t.Fatalf("restore said:\n%s", out)
		}
		began := time.Now()
		nm.Start(t)
		if !testnet.Eventually(90*time.Second, func() bool { return datastoreGet(nm, "/registry/configmaps/default/app") == "two" }) {
			t.Fatalf("the datastore is not back on the new machine:\n%s", nm.Proc.Output())
		}
		restored := time.Since(began)
		if got, _ := os.ReadFile(srv.HostPath(agentTokenPath)); strings.TrimSpace(string(got)) != agentToken {
			t.Errorf("the agent token came back as %q", got)
		}
		for _, a := range agents {
			name := a.Name
			if !testnet.Eventually(90*time.Second, func() bool { return strings.Contains(events(srv), "server accepted "+name+" from") }) {
				t.Fatalf("%s did not join the restored master:\n%s", name, events(srv))
			}
		}
		t.Logf("timing: the datastore was back %s after the new machine's appliance started; both agents joined %s after",
			restored.Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond))
		if out := nm.Proc.Output(); !strings.Contains(out, "restore: the datastore is back") || strings.Contains(out, "level=ERROR") {
			t.Errorf("the new master's log:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(srv.HostPath(testnet.SnapshotDir), "restore-requested")); err == nil {
			t.Error("the restore mark is still there")
		}
	})
}
