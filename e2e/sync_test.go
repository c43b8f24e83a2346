//go:build linux

package e2e

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestEditOnce: the master's file is the cluster's. Nodes pick up a new
// node by themselves with no packet lost, refuse a file that drops them,
// never see an invalid one, and a new agent gets the agent token (never
// the server token) over wg0. Only the nodes' appliances are served: not
// the internet, not a non-root process or a pod on a node.
func TestEditOnce(t *testing.T) {
	testnet.Requirements(t, "wg", "ss", "setpriv")
	tn := testnet.New(t)
	m := newNode(t, tn.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	n1 := newNode(t, tn.AddServer("node-1", 2), "k3s-node-1", "agent", "192.168.2.2")
	n2 := newNode(t, tn.AddServer("node-2", 3), "k3s-node-2", "agent", "192.168.2.3")
	n3 := newNode(t, tn.AddServer("node-3", 4), "k3s-node-3", "agent", "192.168.2.4")
	running := []*node{m, n1, n2}
	startAll(t, running)
	pingUntil(t, n1, "192.168.2.3")
	fileOf := func(n *node) string {
		b, _ := os.ReadFile(n.Srv.HostPath(configPath))
		return string(b)
	}
	all := []*node{m, n1, n2, n3}
	agents := []*node{n1, n2, n3}
	// current is the edit the master's file has at this point of the story.
	current := func(s string) string { return s }
	// inSync waits until every agent runs the master's file.
	inSync := func(t *testing.T, why string) {
		t.Helper()
		want := meshsync.Revision([]byte(fileOf(m)))
		for _, n := range agents {
			if !testnet.Eventually(15*time.Second, func() bool { r := statusJSON(t, n); return r.Sync.Revision == want && r.Sync.Refused == "" }) {
				t.Fatalf("%s does not run the master's file %s: %+v\n%s", n.Name, why, statusJSON(t, n).Sync, n.Proc.Output())
			}
		}
	}

	t.Run("the master's file gains a node; the others follow with no packet lost", func(t *testing.T) {
		flow := n1.Srv.Start("ping", "-i", "0.02", "-c", "400", "-W", "1", "192.168.2.3")
		if !testnet.Eventually(5*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 10 }) {
			t.Fatalf("no flow:\n%s", flow.Output())
		}
		m.WriteConfig(all, nil)
		began := time.Now()
		m.Reload(t, "msg=reloaded")
		want := n3.Key.PublicKey().String()
		for _, n := range []*node{n1, n2} {
			if !testnet.Eventually(10*time.Second, func() bool { return strings.Contains(wgShow(t, n.Srv, "peers"), want) }) {
				t.Fatalf("%s does not have node-3 as a peer 10 s after the master's reload:\n%s", n.Name, n.Proc.Output())
			}
		}
		t.Logf("both agents had node-3 %v after the master's reload", time.Since(began).Round(time.Millisecond))
		flow.Wait(20 * time.Second)
		if !strings.Contains(flow.Output(), " 0% packet loss") {
			t.Errorf("node-1 -> node-2 lost packets while the file was handed round:\n%s", flow.Output())
		}
		for _, n := range []*node{n1, n2} {
			if fileOf(n) != fileOf(m) {
				t.Errorf("%s's file is not the master's", n.Name)
			}
			if _, err := os.Stat(n.Srv.HostPath(configPath + ".previous")); err != nil {
				t.Errorf("%s kept no previous file: %v", n.Name, err)
			}
			if !strings.Contains(n.Proc.Output(), "sync: took the master's cluster file") {
				t.Errorf("%s did not log the sync:\n%s", n.Name, n.Proc.Output())
			}
			r := statusJSON(t, n)
			if r.Sync == nil || r.Sync.Role != "following" || r.Sync.Revision != meshsync.Revision([]byte(fileOf(m))) || r.Sync.LastApplied.IsZero() {
				t.Errorf("%s's status: %+v", n.Name, r.Sync)
			}
		}
		if r := statusJSON(t, m); r.Sync == nil || r.Sync.Role != "serving" || r.Sync.Nodes != 3 {
			t.Errorf("master's status: %+v", r.Sync)
		}
	})

	t.Run("a new agent with only the master's file and no token gets the agent token", func(t *testing.T) {
		os.Remove(n3.Srv.HostPath(agentTokenPath))
		n3.Srv.WriteFile(configPath, []byte(fileOf(m)), 0o644)
		n3.Start(t)
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-3") }) {
			t.Fatalf("node-3 did not join:\n%s", n3.Proc.Output())
		}
		fi, err := os.Stat(n3.Srv.HostPath(agentTokenPath))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the fetched token file: %v, %v", fi, err)
		}
		if b, _ := os.ReadFile(n3.Srv.HostPath(agentTokenPath)); strings.TrimSpace(string(b)) != agentToken {
			t.Error("the fetched token is not the master's agent token")
		}
		if _, err := os.Stat(n3.Srv.HostPath(tokenPath)); err == nil {
			t.Error("the agent holds a server token file")
		}
		for _, n := range []*node{m, n3} {
			if strings.Contains(n.Proc.Output(), token) || strings.Contains(n.Proc.Output(), agentToken) {
				t.Errorf("%s logged a token", n.Name)
			}
		}
	})

	t.Run("a local reload on an agent is brought back to the master's file", func(t *testing.T) {
		n1.WriteConfig(all, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 1400", 1) })
		n1.Reload(t, "sync: took the master's cluster file")
		if !testnet.Eventually(5*time.Second, func() bool { return strings.Contains(n1.Srv.Run("ip", "link", "show", "wg0"), "mtu 1420") }) {
			t.Errorf("node-1 does not run the master's file again:\n%s", n1.Srv.Run("ip", "link", "show", "wg0"))
		}
	})

	t.Run("only the nodes' appliances are served", func(t *testing.T) {
		if out := m.Srv.Run("ss", "-Hltn"); !strings.Contains(out, "192.168.2.1%wg0:5419") {
			t.Errorf("the sync socket is not bound to wg0 on the wg address:\n%s", out)
		}
		if tcpOpen(nil, tn.Internet, m.Srv.PublicIP.String(), meshsync.DefaultPort) {
			t.Error("the sync port answers from the internet")
		}
		get := `exec 3<>/dev/tcp/192.168.2.1/5419; printf 'GET /v1/token HTTP/1.0\r\n\r\n' >&3; cat <&3`
		denied := statusJSON(t, m).Sync.Denied
		// Everyone on a node owns its mesh address; an address proves
		// nothing. Only the appliance, with the node's key, is answered.
		for _, c := range []struct {
			who  string
			srv  *testnet.Server
			args []string
		}{
			{"the master's own address", m.Srv, []string{"timeout", "5", "bash", "-c", get}},
			{"root on node-1 without the key", n1.Srv, []string{"timeout", "5", "bash", "-c", get}},
			{"nobody on node-1", n1.Srv, []string{"timeout", "5", "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash", "-c", get}},
		} {
			out, _ := c.srv.Try(c.args[0], c.args[1:]...)
			if !strings.Contains(out, "403") || strings.Contains(out, token) || strings.Contains(out, agentToken) {
				t.Errorf("%s: %s", c.who, out)
			}
		}
		pod := n1.Srv.AddPod(netip.MustParseAddr("10.42.1.5"))
		out, _ := testnet.RunInOutput(pod, "timeout", "5", "bash", "-c", get)
		if !strings.Contains(out, "403") || strings.Contains(out, token) || strings.Contains(out, agentToken) {
			t.Errorf("a pod on node-1, masqueraded as flannel does: %s", out)
		}
		if got := statusJSON(t, m).Sync.Denied - denied; got != 4 {
			t.Errorf("the master counted %d refused requests, want 4", got)
		}
	})

	t.Run("5000 connections from a node leave the master's fds bounded", func(t *testing.T) {
		before := fds(t, m)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 5000 {
			c, err := n1.Srv.Dial("tcp4", "192.168.2.1:5419")
			if err != nil {
				t.Fatalf("after %d connections: %v", len(conns), err)
			}
			conns = append(conns, c)
		}
		during := fds(t, m)
		if during-before > meshsync.UnprovenPerAddr+meshsync.ProvenPerKey+4 {
			t.Errorf("the master holds %d fds with 5000 connections from node-1, %d before", during, before)
		}
		// node-1's own appliance still syncs meanwhile.
		n1.Srv.Run(applianceBin, "reload")
		inSync(t, "with 5000 idle connections from node-1")
	})

	t.Run("an invalid file on the master is never taken", func(t *testing.T) {
		before := fileOf(n1)
		m.WriteConfig(all, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 99", 1) })
		m.Reload(t, "reload rejected")
		// A good file reaches the followers in well under a second (see
		// above); give a bad one twice that.
		time.Sleep(2 * time.Second)
		if got := fileOf(n1); got != before || strings.Contains(got, "mtu: 99") {
			t.Error("node-1 took a file the master rejected")
		}
		m.WriteConfig(all, nil)
		m.Reload(t, "msg=reloaded")
	})

	t.Run("a refusal, then a revert: both sides idle", func(t *testing.T) {
		// A k3s binary the master has and the agents do not: they refuse.
		bin := "/run/wgk3s/k3s-new"
		m.Srv.WriteFile(bin, mustRead(t, k3sBin), 0o755)
		newBinary := func(s string) string { return strings.Replace(s, "binary: "+k3sBin, "binary: "+bin, 1) }
		m.WriteConfig(all, newBinary)
		m.Reload(t, "msg=reloaded")
		for _, n := range agents {
			if !testnet.Eventually(10*time.Second, func() bool { return strings.Contains(statusJSON(t, n).Sync.Refused, "this host cannot run it") }) {
				t.Fatalf("%s did not refuse: %+v", n.Name, statusJSON(t, n).Sync)
			}
		}
		m.WriteConfig(all, nil) // oops: revert
		m.Reload(t, "msg=reloaded")
		inSync(t, "after the revert")
		polls := statusJSON(t, n1).Sync.Polls
		cpu := map[*node]time.Duration{m: cpuTime(t, m), n1: cpuTime(t, n1)}
		time.Sleep(20 * time.Second) // measuring idleness: a loop shows in CPU time and polls
		for n, was := range cpu {
			if used := cpuTime(t, n) - was; used > 2*time.Second {
				t.Errorf("%s used %v of CPU in 20 s after the revert", n.Name, used)
			}
		}
		if got := statusJSON(t, n1).Sync.Polls - polls; got > 2 {
			t.Errorf("node-1 polled %d times in 20 s; a poll waits 25 s", got)
		}

		// The host is fixed (k3s installed) and reloaded: the refused
		// revision is asked for again and taken.
		m.WriteConfig(all, newBinary)
		m.Reload(t, "msg=reloaded")
		if !testnet.Eventually(10*time.Second, func() bool { return statusJSON(t, n1).Sync.Refused != "" }) {
			t.Fatal("node-1 did not refuse")
		}
		n1.Srv.WriteFile(bin, mustRead(t, k3sBin), 0o755)
		n1.Reload(t, "sync: took the master's cluster file")
		if r := statusJSON(t, n1); r.Sync.Refused != "" || !strings.Contains(strings.Join(r.K3s.Args, " "), "agent") {
			t.Errorf("node-1 after the fix: %+v", r.Sync)
		}
		m.WriteConfig(all, nil)
		m.Reload(t, "msg=reloaded")
		inSync(t, "after the second revert")
	})

	t.Run("a change that needs a restart is written for the next start", func(t *testing.T) {
		current = func(s string) string { return s + "runtime:\n  batch_size: 64\n" }
		m.WriteConfig(all, current)
		m.Stop(t)
		m.Start(t)
		for _, n := range agents {
			if !testnet.Eventually(15*time.Second, func() bool { return strings.Contains(statusJSON(t, n).Sync.Staged, "runtime.batch_size") }) {
				t.Fatalf("%s did not stage the file: %+v\n%s", n.Name, statusJSON(t, n).Sync, n.Proc.Output())
			}
			if fileOf(n) != fileOf(m) {
				t.Errorf("the staged file is not in place on %s", n.Name)
			}
			if r := statusJSON(t, n); r.Sync.Refused != "" {
				t.Errorf("%s refused a file that needs a restart: %+v", n.Name, r.Sync)
			}
		}
		for _, n := range agents {
			n.Stop(t)
			n.Start(t)
			if r := statusJSON(t, n); r.Sync.Staged != "" || r.Sync.Revision != meshsync.Revision([]byte(fileOf(m))) {
				t.Errorf("%s after its restart: %+v", n.Name, r.Sync)
			}
			pingUntil(t, n, "192.168.2.1")
		}
	})

	t.Run("the master's key rotates through the sync; nobody is cut off", func(t *testing.T) {
		newKey, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		old := m.Key
		m.Key = newKey
		m.Srv.WriteFile(testnet.KeyPath, []byte(newKey.String()+"\n"), 0o600)
		m.WriteConfig(all, current)
		flow := n1.Srv.Start("ping", "-i", "0.1", "-c", "100", "-W", "1", "192.168.2.3")
		m.Reload(t, "msg=reloaded")
		for _, n := range agents {
			if !testnet.Eventually(20*time.Second, func() bool { return strings.Contains(wgShow(t, n.Srv, "peers"), newKey.PublicKey().String()) }) {
				t.Fatalf("%s does not have the master's new key:\n%s", n.Name, n.Proc.Output())
			}
			pingUntil(t, n, "192.168.2.1")
		}
		inSync(t, "after the master's key changed")
		if strings.Contains(wgShow(t, n1.Srv, "peers"), old.PublicKey().String()) {
			t.Error("node-1 still has the master's old key")
		}
		flow.Wait(20 * time.Second)
		if !strings.Contains(flow.Output(), " 0% packet loss") {
			t.Errorf("node-1 -> node-2 lost packets while the master's key changed:\n%s", flow.Output())
		}
	})

	t.Run("a file that drops node-1 is refused by node-1", func(t *testing.T) {
		before := fileOf(n1)
		m.WriteConfig([]*node{m, n2, n3}, current)
		m.Reload(t, "msg=reloaded")
		if !n1.Proc.WaitOutput("sync: refused the master's cluster file", 10*time.Second) {
			t.Fatalf("node-1 did not refuse:\n%s", n1.Proc.Output())
		}
		if fileOf(n1) != before {
			t.Error("node-1's file changed")
		}
		if !strings.Contains(n1.Proc.Output(), "it no longer lists this node") {
			t.Errorf("the refusal does not say why:\n%s", n1.Proc.Output())
		}
		if r := statusJSON(t, n1); r.Sync == nil || !strings.Contains(r.Sync.Refused, "no longer lists this node") {
			t.Errorf("node-1's status does not show the refusal: %+v", r.Sync)
		}
	})
}

// fds counts the open file descriptors of n's appliance.
func fds(t *testing.T, n *node) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(n.Proc.Pid()) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// cpuTime is the user and system CPU time n's appliance process used (the
// env wrapper execs it, so the pid is the appliance's).
func cpuTime(t *testing.T, n *node) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(n.Proc.Pid()), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th after ") ".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
