//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

// natCluster is a cloud master, a cloud agent, and two home agents with no
// endpoint in the file: one behind a cone NAT, one behind a symmetric NAT.
// Keepalives every 5 s make a dead direct path show within 15 s.
func natCluster(t *testing.T) (net *testnet.Net, m, cloud, home1, home2 *node) {
	t.Helper()
	net = testnet.New(t)
	m = newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	cloud = newNode(t, net.AddServer("cloud", 2), "k3s-cloud", "agent", "192.168.2.2")
	home1 = newNode(t, net.AddHome("home-1", 3, testnet.Cone), "k3s-home-1", "agent", "192.168.2.3")
	home2 = newNode(t, net.AddHome("home-2", 4, testnet.Symmetric), "k3s-home-2", "agent", "192.168.2.4")
	home1.Endpoint, home2.Endpoint = "", ""
	nodes := []*node{m, cloud, home1, home2}
	for _, n := range nodes {
		n.WriteConfig(nodes, func(s string) string {
			return strings.Replace(s, "persistent_keepalive: 25s", "persistent_keepalive: 5s", 1)
		})
		n.Start(t)
	}
	return net, m, cloud, home1, home2
}

// pairsPing waits until every node in nodes answers a ping from every
// other within timeout, and returns how long that took.
func pairsPing(t *testing.T, nodes []*node, timeout time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := testnet.Eventually(timeout-time.Since(began), func() bool {
					got, _ := a.Srv.Ping(b.Address, 1, 200*time.Millisecond)
					return got == 1
				})
				if !ok {
					mu.Lock()
					failed = append(failed, a.Name+" -> "+b.Name)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("no answer within %s: %s", timeout, strings.Join(failed, ", "))
	}
	return time.Since(began)
}

// pathOf is how n reaches the peer named peer, as its status says:
// "direct", "relayed via NAME", or "" if the status does not list it.
func pathOf(t *testing.T, n *node, peer string) (string, status.Peer) {
	t.Helper()
	return statusJSON(t, n).PathTo(peer)
}

// waitPath waits until n reaches peer by want.
func waitPath(t *testing.T, n *node, peer, want string, timeout time.Duration) {
	t.Helper()
	var got string
	if !testnet.Eventually(timeout, func() bool { got, _ = pathOf(t, n, peer); return got == want }) {
		t.Fatalf("%s reaches %s %q after %s, want %q\n%s", n.Name, peer, got, timeout, want, n.Srv.Run(applianceBin, "status"))
	}
}

// waitLearned waits until n uses the endpoint want for peer, learned from
// the master.
func waitLearned(t *testing.T, n *node, peer, want string) {
	t.Helper()
	var got string
	if !testnet.Eventually(15*time.Second, func() bool { _, p := pathOf(t, n, peer); got = p.LearnedEndpoint; return got == want }) {
		t.Errorf("%s learned %s at %q, want %s\n%s", n.Name, peer, got, want, n.Srv.Run(applianceBin, "status"))
	}
}

func TestNodesBehindNAT(t *testing.T) {
	_, m, cloud, home1, home2 := natCluster(t)
	all := []*node{m, cloud, home1, home2}

	t.Run("every pair pings within 30 s", func(t *testing.T) {
		took := pairsPing(t, all, 30*time.Second)
		t.Logf("timing: every pair of 4 nodes (2 behind NAT, no endpoint) answered %s after the last start", took.Round(100*time.Millisecond))
	})

	t.Run("the pairs the NATs allow go direct, the symmetric home pair is relayed", func(t *testing.T) {
		for _, c := range []struct {
			n          *node
			peer, want string
		}{
			{cloud, "k3s-home-1", "direct"},
			{cloud, "k3s-home-2", "direct"},
			{home1, "k3s-cloud", "direct"},
			{home2, "k3s-cloud", "direct"},
			{home1, "k3s-home-2", "relayed via k3s-master"},
			{home2, "k3s-home-1", "relayed via k3s-master"},
			{m, "k3s-home-1", "direct"},
			{m, "k3s-home-2", "direct"},
		} {
			waitPath(t, c.n, c.peer, c.want, 30*time.Second)
		}
		// The cloud agent learns where home-1 is from the master: its
		// router's address, with the port a cone NAT keeps.
		waitLearned(t, cloud, "k3s-home-1", "203.0.113.30:5418")
		// The relayed pair still answers, through the master.
		if got, out := home1.Srv.Ping(home2.Address, 5, 100*time.Millisecond); got != 5 {
			t.Errorf("home-1 -> home-2 relayed: %d of 5\n%s", got, out)
		}
		if out := home1.Srv.Run(applianceBin, "status"); !strings.Contains(out, "relayed via k3s-master") {
			t.Errorf("the status table does not show the relay:\n%s", out)
		}
	})

	t.Run("a home router's new public address: the mesh recovers within 30 s, no edit", func(t *testing.T) {
		home1.Srv.SetPublicIP(netip.MustParseAddr("203.0.113.33"))
		took := pairsPing(t, all, 30*time.Second)
		t.Logf("timing: every pair answered %s after home-1's router changed its address", took.Round(100*time.Millisecond))
		waitPath(t, cloud, "k3s-home-1", "direct", 30*time.Second)
		waitLearned(t, cloud, "k3s-home-1", "203.0.113.33:5418")
	})

	t.Run("relayed to direct: the loss while the path switches is bounded", func(t *testing.T) {
		// home-1's router drops everything to and from the cloud agent:
		// the pair falls back to the relay.
		block := func(op string) {
			for _, dir := range []string{"-d", "-s"} {
				home1.Srv.RunRouter("iptables", "-w", op, "FORWARD", dir, cloud.Srv.PublicIP.String(), "-j", "DROP")
			}
		}
		block("-I")
		waitPath(t, cloud, "k3s-home-1", "relayed via k3s-master", 30*time.Second)
		waitPath(t, home1, "k3s-cloud", "relayed via k3s-master", 30*time.Second)
		if got, out := cloud.Srv.Ping(home1.Address, 5, 100*time.Millisecond); got != 5 {
			t.Fatalf("cloud -> home-1 through the relay: %d of 5\n%s", got, out)
		}
		const count, interval = 300, 50 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ping := cloud.Srv.Command(ctx, "ping", "-n", "-q", "-c", fmt.Sprint(count), "-i", fmt.Sprintf("%.2f", interval.Seconds()), "-W", "1", home1.Address)
		var out strings.Builder
		ping.Stdout = &out
		if err := ping.Start(); err != nil {
			t.Fatal(err)
		}
		block("-D") // a direct handshake follows
		waitPath(t, cloud, "k3s-home-1", "direct", 15*time.Second)
		waitPath(t, home1, "k3s-cloud", "direct", 15*time.Second)
		ping.Wait()
		got := testnet.Received(out.String())
		lost := count - got
		t.Logf("timing: %d of %d pings (every %s) lost while cloud <-> home-1 went from relayed to direct", lost, count, interval)
		if limit := int(3 * time.Second / interval); lost > limit {
			t.Errorf("%d pings lost while the path switched, more than %d (3 s)", lost, limit)
		}
	})

	t.Run("the master restarts and the relays resume", func(t *testing.T) {
		m.Stop(t)
		m.Start(t)
		began := time.Now()
		for _, pair := range [][2]*node{{home1, home2}, {home2, home1}} {
			if !testnet.Eventually(30*time.Second-time.Since(began), func() bool {
				got, _ := pair[0].Srv.Ping(pair[1].Address, 1, 200*time.Millisecond)
				return got == 1
			}) {
				t.Fatalf("%s -> %s: no answer within 30 s of the master's restart\n%s", pair[0].Name, pair[1].Name,
					pair[0].Srv.Run(applianceBin, "status"))
			}
		}
		t.Logf("timing: the relayed pair answered %s after the master was back", time.Since(began).Round(100*time.Millisecond))
		if p, _ := pathOf(t, home1, "k3s-home-2"); p != "relayed via k3s-master" {
			t.Errorf("home-1 reaches home-2 %q", p)
		}
	})
}
