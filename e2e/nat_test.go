//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

// natCluster is a cloud master, a cloud server and a cloud agent (each
// with an endpoint: each relays), and three home agents with no endpoint
// in the file: home-1 behind a cone NAT, home-2 behind a symmetric NAT,
// and home-3 on home-1's LAN behind the same router (which does not
// hairpin). Keepalives every 5 s.
func natCluster(t *testing.T) (net *testnet.Net, all []*node, m, server, cloud, home1, home2, home3 *node) {
	t.Helper()
	net = testnet.New(t)
	m = newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	server = newNode(t, net.AddServer("server", 2), "k3s-server", "server", "192.168.2.2")
	cloud = newNode(t, net.AddServer("cloud", 3), "k3s-cloud", "agent", "192.168.2.3")
	h1 := net.AddHome("home-1", 4, testnet.Cone)
	home1 = newNode(t, h1, "k3s-home-1", "agent", "192.168.2.4")
	home2 = newNode(t, net.AddHome("home-2", 5, testnet.Symmetric), "k3s-home-2", "agent", "192.168.2.5")
	home3 = newNode(t, h1.AddNeighbour("home-3", 3), "k3s-home-3", "agent", "192.168.2.6")
	home1.Endpoint, home2.Endpoint, home3.Endpoint = "", "", ""
	all = []*node{m, server, cloud, home1, home2, home3}
	for _, n := range all {
		n.WriteConfig(all, func(s string) string {
			return strings.Replace(s, "persistent_keepalive: 25s", "persistent_keepalive: 5s", 1)
		})
		n.Start(t)
	}
	return net, all, m, server, cloud, home1, home2, home3
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

// relayOf is the name of the relay n reaches peer through, or "".
func relayOf(t *testing.T, n *node, peer string) string {
	_, p := pathOf(t, n, peer)
	return p.Via
}

// flow pings dst from src every interval until stop is called, and
// returns how many of the pings sent were not answered.
func flow(t *testing.T, src *node, dst string, interval time.Duration) (stop func() (lost, sent int)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := src.Srv.Command(ctx, "ping", "-n", "-i", fmt.Sprintf("%.2f", interval.Seconds()), "-W", "1", dst)
	var out syncWriter
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(10*time.Second, func() bool { return strings.Count(out.String(), "bytes from") >= 3 }) {
		t.Fatalf("%s -> %s: no flow:\n%s", src.Name, dst, out.String())
	}
	return func() (int, int) {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		cancel()
		lost, answered := lostAfterFirstAnswer(out.String())
		return lost, lost + answered
	}
}

// syncWriter is a bytes buffer safe to read while a command writes it.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestNodesBehindNAT(t *testing.T) {
	_, all, m, server, cloud, home1, home2, home3 := natCluster(t)
	relays := []*node{m, server, cloud}

	t.Run("every pair pings within 30 s", func(t *testing.T) {
		took := pairsPing(t, all, 30*time.Second)
		t.Logf("timing: every pair of 6 nodes (3 behind NAT, no endpoint) answered %s after the last start", took.Round(100*time.Millisecond))
	})

	t.Run("direct where the NATs allow, over the LAN behind one router; the symmetric pairs relayed", func(t *testing.T) {
		for _, c := range []struct {
			n          *node
			peer, want string
		}{
			{cloud, "k3s-home-1", "direct"},
			{cloud, "k3s-home-2", "direct"},
			{home1, "k3s-cloud", "direct"},
			{home2, "k3s-cloud", "direct"},
			{home1, "k3s-home-3", "direct"},
			{home3, "k3s-home-1", "direct"},
			{m, "k3s-home-1", "direct"},
		} {
			waitPath(t, c.n, c.peer, c.want, 30*time.Second)
		}
		// Behind one router that does not hairpin, home-1 and home-3 found
		// each other on their LAN.
		if _, p := pathOf(t, home1, "k3s-home-3"); p.LearnedEndpoint != "10.4.1.3:5418" {
			t.Errorf("home-1 reaches home-3 at %q, want its LAN address 10.4.1.3:5418", p.LearnedEndpoint)
		}
		for _, pair := range [][2]*node{{home1, home2}, {home2, home1}, {home2, home3}} {
			if !testnet.Eventually(30*time.Second, func() bool { return relayOf(t, pair[0], pair[1].Name) != "" }) {
				p, _ := pathOf(t, pair[0], pair[1].Name)
				t.Errorf("%s reaches %s %q, want relayed", pair[0].Name, pair[1].Name, p)
			}
		}
		if got, out := home1.Srv.Ping(home2.Address, 5, 100*time.Millisecond); got != 5 {
			t.Errorf("home-1 -> home-2 relayed: %d of 5\n%s", got, out)
		}
		if out := home1.Srv.Run(applianceBin, "status"); !strings.Contains(out, "relayed via") {
			t.Errorf("the status table does not show the relay:\n%s", out)
		}
	})

	t.Run("a relay sees only ciphertext: nothing of the homes' pings on any relay's wg0", func(t *testing.T) {
		count := func(n *node) (int, uint64) {
			out := n.Srv.Run("iptables", "-w", "-t", "raw", "-L", "PREROUTING", "-v", "-n", "-x")
			pkts := 0
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "wgk3s-test-plain") {
					fmt.Sscanf(strings.TrimSpace(l), "%d", &pkts)
				}
			}
			return pkts, statusJSON(t, n).Relay.Packets
		}
		for _, r := range relays {
			for _, dir := range [][2]string{{home1.Address, home2.Address}, {home2.Address, home1.Address}} {
				r.Srv.Run("iptables", "-w", "-t", "raw", "-I", "PREROUTING", "-i", "wg0", "-s", dir[0], "-d", dir[1], "-m", "comment", "--comment", "wgk3s-test-plain")
			}
		}
		before := map[string]uint64{}
		for _, r := range relays {
			_, before[r.Name] = count(r)
		}
		if got, out := home1.Srv.Ping(home2.Address, 20, 50*time.Millisecond); got != 20 {
			t.Fatalf("home-1 -> home-2: %d of 20\n%s", got, out)
		}
		forwarded := uint64(0)
		for _, r := range relays {
			plain, pkts := count(r)
			if plain != 0 {
				t.Errorf("%s's wg0 saw %d of the homes' packets in the clear", r.Name, plain)
			}
			forwarded += pkts - before[r.Name]
		}
		if forwarded < 40 {
			t.Errorf("the relays forwarded %d datagrams for 20 pings, want at least 40 (each ping and its answer)", forwarded)
		}
	})

	t.Run("the active relay's cloud goes away: the homes reach each other through another, losing at most 3 s", func(t *testing.T) {
		via := relayOf(t, home1, "k3s-home-2")
		var r *node
		for _, x := range relays {
			if x.Name == via {
				r = x
			}
		}
		if r == nil {
			t.Fatalf("home-1 reaches home-2 through %q", via)
		}
		stop := flow(t, home1, home2.Address, 100*time.Millisecond)
		r.Srv.SetUplink(false)
		defer r.Srv.SetUplink(true)
		if !testnet.Eventually(15*time.Second, func() bool {
			v := relayOf(t, home1, "k3s-home-2")
			return v != "" && v != via
		}) {
			t.Fatalf("home-1 still reaches home-2 through %s, whose cloud is cut off", via)
		}
		testnet.Eventually(5*time.Second, func() bool { got, _ := home1.Srv.Ping(home2.Address, 1, 100*time.Millisecond); return got == 1 })
		lost, sent := stop()
		t.Logf("timing: %d of %d pings (every 100 ms) lost when %s's cloud went away; now through %s", lost, sent, via, relayOf(t, home1, "k3s-home-2"))
		if lost > 30 {
			t.Errorf("%d pings (100 ms apart) lost, more than 3 s", lost)
		}
		r.Srv.SetUplink(true)
	})

	t.Run("a direct path cut under a ping flow loses at most 2 s, and is direct again within 5 s of opening", func(t *testing.T) {
		waitPath(t, cloud, "k3s-home-1", "direct", 30*time.Second)
		block := func(op string) {
			for _, dir := range []string{"-d", "-s"} {
				home1.Srv.RunRouter("iptables", "-w", op, "FORWARD", dir, cloud.Srv.PublicIP.String(), "-j", "DROP")
			}
		}
		stop := flow(t, cloud, home1.Address, 50*time.Millisecond)
		block("-I")
		if !testnet.Eventually(10*time.Second, func() bool { return relayOf(t, cloud, "k3s-home-1") != "" }) {
			t.Fatal("cloud -> home-1 not relayed with its direct path cut")
		}
		testnet.Eventually(5*time.Second, func() bool { got, _ := cloud.Srv.Ping(home1.Address, 1, 100*time.Millisecond); return got == 1 })
		lost, sent := stop()
		t.Logf("timing: %d of %d pings (every 50 ms) lost when cloud <-> home-1's direct path was cut", lost, sent)
		if lost > 40 {
			t.Errorf("%d pings (50 ms apart) lost, more than 2 s", lost)
		}
		block("-D")
		opened := time.Now()
		waitPath(t, cloud, "k3s-home-1", "direct", 15*time.Second)
		took := time.Since(opened)
		t.Logf("timing: cloud -> home-1 direct again %s after its path opened", took.Round(100*time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("direct again %s after the path opened, want within 5 s", took)
		}
	})

	t.Run("a home router's new public address: the mesh recovers within 30 s, no edit", func(t *testing.T) {
		home1.Srv.SetPublicIP(netip.MustParseAddr("203.0.113.44"))
		took := pairsPing(t, all, 30*time.Second)
		t.Logf("timing: every pair answered %s after home-1's router changed its address", took.Round(100*time.Millisecond))
		waitPath(t, cloud, "k3s-home-1", "direct", 30*time.Second)
	})

	t.Run("a node that is down is not reachable, through a relay or not", func(t *testing.T) {
		home2.Stop(t)
		if !testnet.Eventually(30*time.Second, func() bool { _, p := pathOf(t, home1, "k3s-home-2"); return !p.Reachable }) {
			t.Errorf("home-2, stopped, stays reachable for home-1:\n%s", home1.Srv.Run(applianceBin, "status"))
		}
		home2.Start(t)
		pairsPing(t, all, 30*time.Second)
	})
}
