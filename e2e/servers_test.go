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
	os.Remove(s1.Srv.HostPath(agentTokenPath))
	os.Remove(a.Srv.HostPath(agentTokenPath))
	startAll(t, []*node{m, s1, a})

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
		if _, err := os.Stat(s1.Srv.HostPath(agentTokenPath)); err == nil {
			t.Error("the server was handed the agent token too")
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

	t.Run("with the master down, a starting agent joins the server", func(t *testing.T) {
		a.Stop(t)
		m.Stop(t)
		before := len(records(t, a.Srv))
		a.Start(t)
		if !a.Proc.WaitOutput(`msg="k3s server is reachable" server=192.168.2.2:6443`, 30*time.Second) {
			t.Fatalf("the agent did not wait for the server:\n%s", a.Proc.Output())
		}
		if !testnet.Eventually(15*time.Second, func() bool { return len(records(t, a.Srv)) > before }) {
			t.Fatal("the agent's k3s did not start")
		}
		if argv := argvOf(t, a.Srv); !hasArgs(argv, "--server", "https://192.168.2.2:6443") {
			t.Errorf("the agent's k3s argv: %q", argv)
		}
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(s1.Srv), "server accepted k3s-node-1") }) {
			t.Errorf("the agent did not join the server:\n%s", events(s1.Srv))
		}
	})
}
