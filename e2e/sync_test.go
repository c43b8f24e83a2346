//go:build linux

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/meshsync"
)

// TestEditOnce: the master's file is the cluster's. Nodes pick up a new
// node by themselves with no packet lost, refuse a file that drops them,
// never see an invalid one, and a new agent gets the token over wg0.
// Nothing is served to the internet or to a non-node.
func TestEditOnce(t *testing.T) {
	testnet.Requirements(t, "wg", "ss")
	net := testnet.New(t)
	m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	n1 := newNode(t, net.AddServer("node-1", 2), "k3s-node-1", "agent", "192.168.2.2")
	n2 := newNode(t, net.AddServer("node-2", 3), "k3s-node-2", "agent", "192.168.2.3")
	n3 := newNode(t, net.AddServer("node-3", 4), "k3s-node-3", "agent", "192.168.2.4")
	running := []*node{m, n1, n2}
	startAll(t, running)
	pingUntil(t, n1, "192.168.2.3")
	fileOf := func(n *node) string {
		b, _ := os.ReadFile(n.Srv.HostPath(configPath))
		return string(b)
	}

	t.Run("the master's file gains a node; the others follow with no packet lost", func(t *testing.T) {
		flow := n1.Srv.Start("ping", "-i", "0.02", "-c", "400", "-W", "1", "192.168.2.3")
		if !testnet.Eventually(5*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 10 }) {
			t.Fatalf("no flow:\n%s", flow.Output())
		}
		m.WriteConfig([]*node{m, n1, n2, n3}, nil)
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

	t.Run("a new agent with only the master's file and no token joins", func(t *testing.T) {
		os.Remove(n3.Srv.HostPath(tokenPath))
		n3.Srv.WriteFile(configPath, []byte(fileOf(m)), 0o644)
		n3.Start(t)
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-3") }) {
			t.Fatalf("node-3 did not join:\n%s", n3.Proc.Output())
		}
		fi, err := os.Stat(n3.Srv.HostPath(tokenPath))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the fetched token file: %v, %v", fi, err)
		}
		if b, _ := os.ReadFile(n3.Srv.HostPath(tokenPath)); strings.TrimSpace(string(b)) != token {
			t.Error("the fetched token is not the master's")
		}
		for _, n := range []*node{m, n3} {
			if strings.Contains(n.Proc.Output(), token) {
				t.Errorf("%s logged the token", n.Name)
			}
		}
	})

	t.Run("a local reload on an agent is brought back to the master's file", func(t *testing.T) {
		n1.WriteConfig([]*node{m, n1, n2, n3}, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 1400", 1) })
		n1.Reload(t, "sync: took the master's cluster file")
		if !testnet.Eventually(5*time.Second, func() bool { return strings.Contains(n1.Srv.Run("ip", "link", "show", "wg0"), "mtu 1420") }) {
			t.Errorf("node-1 does not run the master's file again:\n%s", n1.Srv.Run("ip", "link", "show", "wg0"))
		}
	})

	t.Run("nothing is served to the internet or to a non-node", func(t *testing.T) {
		if out := m.Srv.Run("ss", "-Hltn"); !strings.Contains(out, "192.168.2.1%wg0:5419") {
			t.Errorf("the sync socket is not bound to wg0 on the wg address:\n%s", out)
		}
		if tcpOpen(nil, net.Internet, m.Srv.PublicIP.String(), meshsync.DefaultPort) {
			t.Error("the sync port answers from the internet")
		}
		// The master's own address is not a node it serves.
		out, _ := m.Srv.Try("timeout", "5", "bash", "-c",
			`exec 3<>/dev/tcp/192.168.2.1/5419; printf 'GET /v1/token HTTP/1.0\r\n\r\n' >&3; cat <&3`)
		if !strings.Contains(out, "403") || strings.Contains(out, token) {
			t.Errorf("a request from a non-node address: %s", out)
		}
	})

	t.Run("an invalid file on the master is never taken", func(t *testing.T) {
		before := fileOf(n1)
		m.WriteConfig([]*node{m, n1, n2, n3}, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 99", 1) })
		m.Reload(t, "reload rejected")
		// A good file reaches the followers in well under a second (see
		// above); give a bad one twice that.
		time.Sleep(2 * time.Second)
		if got := fileOf(n1); got != before || strings.Contains(got, "mtu: 99") {
			t.Error("node-1 took a file the master rejected")
		}
	})

	t.Run("a file that drops node-1 is refused by node-1", func(t *testing.T) {
		before := fileOf(n1)
		m.WriteConfig([]*node{m, n2, n3}, nil)
		m.Reload(t, "msg=reloaded")
		if !n1.Proc.WaitOutput("sync: refused the master's cluster file", 10*time.Second) {
			t.Fatalf("node-1 did not refuse:\n%s", n1.Proc.Output())
		}
		if fileOf(n1) != before {
			t.Error("node-1's file changed")
		}
		if !strings.Contains(n1.Proc.Output(), "public key") {
			t.Errorf("the refusal does not say why:\n%s", n1.Proc.Output())
		}
		if r := statusJSON(t, n1); r.Sync == nil || r.Sync.Refused == "" {
			t.Errorf("node-1's status does not show the refusal: %+v", r.Sync)
		}
	})
}
