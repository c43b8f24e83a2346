//go:build linux

package e2e

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// argvOf is the newest stand-in k3s record's argv on srv.
func argvOf(t *testing.T, srv *testnet.Server) []string {
	t.Helper()
	var argv []string
	testnet.Eventually(15*time.Second, func() bool {
		recs := records(t, srv)
		if len(recs) == 0 {
			return false
		}
		argv = recs[len(recs)-1].Argv
		return true
	})
	return argv
}

func hasArgs(argv []string, want ...string) bool {
	for i := 0; i+len(want) <= len(argv); i++ {
		if slices.Equal(argv[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// TestSeveralServers: a master, a server and an agent. The master starts
// etcd, the server joins it with the server token it fetched over wg0 (an
// agent's token is refused), the agent holds the agent token only; with
// the master down, a starting agent waits for the server and joins it.
func TestSeveralServers(t *testing.T) {
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	s1 := newNode(t, net.AddServer("server-1", 2), "k3s-server-1", "server", "192.168.2.2")
	a := newNode(t, net.AddServer("node-1", 3), "k3s-node-1", "agent", "192.168.2.3")
	a2 := newNode(t, net.AddServer("node-2", 4), "k3s-node-2", "agent", "192.168.2.4")
	for _, n := range []*node{s1, a, a2} {
		os.Remove(n.Srv.HostPath(agentTokenPath))
	}
	all := []*node{m, s1, a, a2}
	for _, n := range all {
		n.WriteConfig(all, nil)
	}
	for _, n := range all[:3] { // node-2 starts while the master is down
		n.Start(t)
	}

	t.Run("the master starts etcd, the server joins it with the server token fetched over wg0", func(t *testing.T) {
		if argv := argvOf(t, m.Srv); !hasArgs(argv, "--cluster-init") || !hasArgs(argv, "--etcd-arg=election-timeout=3000") {
			t.Errorf("master's k3s argv: %q", argv)
		}
		argv := argvOf(t, s1.Srv)
		if argv[1] != "server" || !hasArgs(argv, "--server", "https://192.168.2.1:6443") || !hasArgs(argv, "--token-file", tokenPath) || hasArgs(argv, "--cluster-init") {
			t.Errorf("server's k3s argv: %q", argv)
		}
		if !testnet.Eventually(30*time.Second, func() bool {
			return strings.Contains(events(m.Srv), "server accepted server k3s-server-1 from 192.168.2.2:")
		}) {
			t.Fatalf("the server did not join the master:\n%s\n%s", events(m.Srv), s1.Proc.Output())
		}
		if tok, err := os.ReadFile(s1.Srv.HostPath(tokenPath)); err != nil || strings.TrimSpace(string(tok)) != token {
			t.Errorf("the server's token file: %q, %v", tok, err)
		}
		if fi, err := os.Stat(s1.Srv.HostPath(tokenPath)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the server's token file mode: %v, %v", fi, err)
		}
		// It serves agents in turn: it holds their token too.
		if tok, err := os.ReadFile(s1.Srv.HostPath(agentTokenPath)); err != nil || strings.TrimSpace(string(tok)) != agentToken {
			t.Errorf("the server's agent token file: %q, %v", tok, err)
		}
	})

	t.Run("the agent holds the agent token only, which joins no server", func(t *testing.T) {
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-1") }) {
			t.Fatalf("the agent did not join:\n%s", events(m.Srv))
		}
		if tok, _ := os.ReadFile(a.Srv.HostPath(agentTokenPath)); strings.TrimSpace(string(tok)) != agentToken {
			t.Errorf("agent token on the agent = %q", tok)
		}
		if _, err := os.Stat(a.Srv.HostPath(tokenPath)); err == nil {
			t.Error("the agent holds the server token")
		}
		// The agent token presented as a server's is refused.
		c, err := a.Srv.Dial("tcp", "192.168.2.1:6443")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "SERVER %s rogue\n", agentToken)
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := c.Read(buf)
		c.Close()
		if got := strings.TrimSpace(string(buf[:n])); got != "DENIED" {
			t.Errorf("the agent token as a server's: %q", got)
		}
	})

	t.Run("with the master down, nodes follow the server, and a new agent gets its token there and joins it", func(t *testing.T) {
		m.Stop(t)
		if !testnet.Eventually(60*time.Second, func() bool {
			st := statusJSON(t, a)
			return st.Sync != nil && strings.Contains(st.Sync.Following, "k3s-server-1")
		}) {
			t.Errorf("node-1 does not follow the server:\n%+v\n%s", statusJSON(t, a).Sync, a.Proc.Output())
		}
		a2.Start(t)
		if !a2.Proc.WaitOutput(`msg="k3s server is reachable" server=192.168.2.2:6443`, 60*time.Second) {
			t.Fatalf("node-2 did not wait for the server:\n%s", a2.Proc.Output())
		}
		if !a2.Proc.WaitOutput("sync: token written", 60*time.Second) {
			t.Fatalf("node-2 got no token:\n%s", a2.Proc.Output())
		}
		if tok, err := os.ReadFile(a2.Srv.HostPath(agentTokenPath)); err != nil || strings.TrimSpace(string(tok)) != agentToken {
			t.Errorf("node-2's agent token from the server: %q, %v", tok, err)
		}
		if argv := argvOf(t, a2.Srv); !hasArgs(argv, "--server", "https://192.168.2.2:6443") {
			t.Errorf("node-2's k3s argv: %q", argv)
		}
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(s1.Srv), "server accepted k3s-node-2") }) {
			t.Errorf("node-2 did not join the server:\n%s", events(s1.Srv))
		}
		if !strings.Contains(s1.Proc.Output(), "sync: handed its token to a node") {
			t.Errorf("the server did not hand node-2 its token:\n%s", s1.Proc.Output())
		}
	})

	t.Run("the master back: its next edit reaches every node", func(t *testing.T) {
		m.Start(t)
		m.WriteConfig(all, func(s string) string {
			return strings.Replace(s, "persistent_keepalive: 25s", "persistent_keepalive: 24s", 1)
		})
		m.Reload(t, "msg=reloaded")
		want, _ := os.ReadFile(m.Srv.HostPath(configPath))
		for _, n := range all[1:] {
			n := n
			if !testnet.Eventually(90*time.Second, func() bool {
				got, _ := os.ReadFile(n.Srv.HostPath(configPath))
				return string(got) == string(want)
			}) {
				t.Errorf("%s does not have the master's edit:\n%s", n.Name, n.Proc.Output())
			}
		}
	})
}

// TestPromoteAfterTheMasterIsLost: the master's machine is lost for good
// (its namespaces destroyed: processes, keys and files gone). `appliance
// promote` on the server makes it the master: it refuses while the master
// answers; afterwards every node takes the server's file and follows it as
// the master, and a node it invites joins.
func TestPromoteAfterTheMasterIsLost(t *testing.T) {
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	s1 := newNode(t, net.AddServer("server-1", 2), "k3s-server-1", "server", "192.168.2.2")
	a := newNode(t, net.AddServer("node-1", 3), "k3s-node-1", "agent", "192.168.2.3")
	startAll(t, []*node{m, s1, a})
	pingUntil(t, a, s1.Address)
	pingUntil(t, a, m.Address)

	t.Run("refused while the master answers", func(t *testing.T) {
		before, _ := os.ReadFile(s1.Srv.HostPath(configPath))
		out, errs, rc := cli(t, s1.Srv, "", "promote", "--config", configPath, "--env-file", envFile)
		after, _ := os.ReadFile(s1.Srv.HostPath(configPath))
		if rc != 2 || !strings.Contains(errs, "still answers") || !strings.Contains(errs, "two masters") || string(before) != string(after) {
			t.Errorf("promote next to a live master: exit %d\n%s%s", rc, out, errs)
		}
	})

	t.Run("the master's machine lost: the server is promoted and every node follows it", func(t *testing.T) {
		m.Srv.Destroy()
		out, errs, rc := cli(t, s1.Srv, "", "promote", "--config", configPath, "--env-file", envFile)
		if rc != 0 || !strings.Contains(errs, "k3s-server-1 is the master now") {
			t.Fatalf("promote: exit %d\n%s%s", rc, out, errs)
		}
		file, _ := os.ReadFile(s1.Srv.HostPath(configPath))
		if strings.Contains(string(file), "k3s-master") || !strings.Contains(string(file), "name: k3s-server-1\n    role: master") {
			t.Fatalf("the promoted server's file:\n%s", file)
		}
		if env, _ := os.ReadFile(s1.Srv.HostPath(envFile)); !strings.Contains(string(env), "ROLE=master") {
			t.Errorf("env file: %q", env)
		}
		s1.Stop(t) // what systemctl restart does where systemd runs it
		s1.Role = "master"
		s1.Start(t)
		began := time.Now()
		if !testnet.Eventually(60*time.Second, func() bool {
			got, _ := os.ReadFile(a.Srv.HostPath(configPath))
			r := statusJSON(t, a)
			return string(got) == string(file) && r.Sync != nil && r.Sync.Master == "192.168.2.2:5419" && r.Sync.Following == ""
		}) {
			t.Fatalf("node-1 does not follow the promoted master: %+v\n%s", statusJSON(t, a).Sync, a.Proc.Output())
		}
		t.Logf("timing: node-1 followed the promoted master %s after its restart", time.Since(began).Round(100*time.Millisecond))
		if r := statusJSON(t, s1); r.Role != "master" || r.Sync == nil || r.Sync.Role != "serving" {
			t.Errorf("the promoted server's status: role %s, sync %+v", r.Role, r.Sync)
		}
		pingUntil(t, a, s1.Address)
	})

	t.Run("a node the promoted master invites joins", func(t *testing.T) {
		srv4 := net.AddServer("node-4", 4)
		code := inviteCode(t, s1, "k3s-node-4", "--endpoint", fmt.Sprintf("%s:%d", srv4.PublicIP, testnet.Port))
		n4 := joinNode(t, srv4, "k3s-node-4", "192.168.2.4", code)
		n4.Start(t)
		// Its key switch (the code's key for its own) is done first: the
		// pings then count the mesh, not the switch's packet or two.
		if !n4.Proc.WaitOutput("join: this node's own key replaces the join code's", 30*time.Second) {
			t.Errorf("node-4 did not replace its code's key:\n%s", n4.Proc.Output())
		}
		n4.PingUntil(t, s1.Address, 30*time.Second)
		n4.PingUntil(t, a.Address, 30*time.Second)
	})
}
