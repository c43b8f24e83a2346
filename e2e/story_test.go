//go:build linux

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// TestCrossCloudStory walks the manual procedure's story and what an
// operator does after, on three simulated clouds, with the real binary run
// as systemd runs it. Every node's endpoint is a DNS name served in the
// simulated internet, so that public address changes can be followed.
func TestCrossCloudStory(t *testing.T) {
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	dns := net.StartDNS()
	var nodes []*node
	for i, spec := range []struct{ name, role, addr string }{
		{"k3s-master", "master", "192.168.2.1"},
		{"k3s-node-1", "agent", "192.168.2.2"},
		{"k3s-node-2", "agent", "192.168.2.3"},
	} {
		srv := net.AddServer(strings.TrimPrefix(spec.name, "k3s-"), i+1)
		n := newNode(t, srv, spec.name, spec.role, spec.addr)
		host := strings.TrimPrefix(spec.name, "k3s-") + ".cloud.test"
		n.Endpoint = fmt.Sprintf("%s:%d", host, testnet.Port)
		dns.Set(host, srv.PublicIP)
		nodes = append(nodes, n)
	}
	m, n1, n2 := nodes[0], nodes[1], nodes[2]
	firstTwo := nodes[:2]

	// flow starts a ping master -> node-1 that must lose nothing.
	flow := func(count int) *testnet.Proc {
		return m.Srv.Start("ping", "-n", "-q", "-c", fmt.Sprint(count), "-i", "0.05", "-W", "2", "192.168.2.2")
	}
	requireNoLoss := func(t *testing.T, p *testnet.Proc, count int) {
		t.Helper()
		if exited, _ := p.Wait(time.Duration(count)*50*time.Millisecond + 20*time.Second); !exited {
			t.Fatal("ping flow did not finish")
		}
		if want := fmt.Sprintf("%d packets transmitted, %d received", count, count); !strings.Contains(p.Output(), want) {
			t.Errorf("ping flow lost packets:\n%s", p.Output())
		}
	}

	t.Run("1 master and node-1 come up from one file", func(t *testing.T) {
		startAll(t, firstTwo)
		pingUntil(t, m, "192.168.2.2")
		pingUntil(t, n1, "192.168.2.1")
		if out := wgShow(t, m.Srv); !strings.Contains(out, "latest handshake") {
			t.Errorf("no handshake:\n%s", out)
		}
	})

	t.Run("2 the agent joins the server through the tunnel", func(t *testing.T) {
		if !testnet.Eventually(30*time.Second, func() bool {
			return strings.Contains(events(m.Srv), "server accepted k3s-node-1 from 192.168.2.2:")
		}) {
			t.Fatalf("node-1 did not join:\n%s", events(m.Srv))
		}
	})

	t.Run("3 node-2 joins by reload while a flow loses nothing", func(t *testing.T) {
		p := flow(200)
		for _, n := range nodes {
			n.WriteConfig(nodes, nil)
		}
		m.Reload(t, "msg=reloaded")
		n1.Reload(t, "msg=reloaded")
		n2.Start(t)
		for _, pair := range [][2]*node{{m, n2}, {n1, n2}, {n2, m}, {n2, n1}} {
			pingUntil(t, pair[0], pair[1].Address)
		}
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-2") }) {
			t.Errorf("node-2 did not join k3s:\n%s", events(m.Srv))
		}
		requireNoLoss(t, p, 200)
	})

	t.Run("4 a broken file is rejected while a flow loses nothing", func(t *testing.T) {
		p := flow(60)
		before := stripCounters(wgShow(t, m.Srv, "dump"))
		m.Srv.WriteFile(configPath, []byte(clusterFile(nodes, func(s string) string { return strings.Replace(s, "role: master", "role: boss", 1) })), 0o644)
		m.Reload(t, "reload rejected")
		if after := stripCounters(wgShow(t, m.Srv, "dump")); after != before {
			t.Errorf("wg0 changed after a rejected reload")
		}
		m.WriteConfig(nodes, nil)
		requireNoLoss(t, p, 60)
	})

	t.Run("5 crashes: k3s is restarted, a killed appliance recovers without duplicate rules", func(t *testing.T) {
		pid := k3sPID(n1)
		syscall.Kill(pid, syscall.SIGUSR1)
		if !testnet.Eventually(15*time.Second, func() bool { p := k3sPID(n1); return p != 0 && p != pid }) {
			t.Fatalf("k3s on node-1 not restarted:\n%s", n1.Proc.Output())
		}
		m.Proc.Signal(syscall.SIGKILL)
		m.Proc.Wait(5 * time.Second)
		m.Start(t)
		for _, n := range nodes[1:] {
			pingUntil(t, m, n.Address)
			pingUntil(t, n, m.Address)
		}
		requireOnce(t, iptablesSave(t, m.Srv, "nft"))
		// Both agents join the restarted server.
		if !testnet.Eventually(30*time.Second, func() bool {
			e := events(m.Srv)
			return strings.Count(e, "server accepted k3s-node-1") >= 2 && strings.Count(e, "server accepted k3s-node-2") >= 2
		}) {
			t.Errorf("agents did not rejoin the restarted server:\n%s", events(m.Srv))
		}
	})

	t.Run("6 node-1 is off the internet for 20s and recovers by itself", func(t *testing.T) {
		n1.Srv.SetUplink(false)
		began := time.Now()
		// The outage is real: node-1 does not answer while it lasts.
		if got, out := m.Srv.Ping("192.168.2.2", 2, 500*time.Millisecond); got != 0 {
			t.Fatalf("node-1 answered with its uplink down:\n%s", out)
		}
		time.Sleep(20*time.Second - time.Since(began)) // the rest of the outage: nothing to poll
		n1.Srv.SetUplink(true)
		// Persistent keepalive (25 s) and handshake retries (5 s) bring it back.
		began = time.Now()
		pingUntilWithin(t, m, "192.168.2.2", 45*time.Second)
		t.Logf("node-1 reachable again %v after its link came back", time.Since(began).Round(time.Second))
	})

	t.Run("7a node-1 gets a new public IP: the mesh follows it", func(t *testing.T) {
		newIP := netip.MustParseAddr("203.0.113.21")
		n1.Srv.SetPublicIP(newIP)
		dns.Set("node-1.cloud.test", newIP)
		pingUntilWithin(t, m, "192.168.2.2", 60*time.Second)
		pingUntilWithin(t, n2, "192.168.2.2", 60*time.Second)
		if out := wgShow(t, m.Srv, "endpoints"); !strings.Contains(out, "203.0.113.21:5418") {
			t.Errorf("master does not use node-1's new address:\n%s", out)
		}
	})

	t.Run("7b master and node-1 both move: node-2 relays them at once, and DNS re-resolution takes them direct again", func(t *testing.T) {
		// Each now sends to the other's old address; neither can roam to the
		// other. Their direct path dies; node-2 (which both still reach)
		// relays them within seconds. A relayed peer's name is looked up
		// again (every 10 s), which finds the new addresses: direct again.
		m.Srv.SetPublicIP(netip.MustParseAddr("203.0.113.11"))
		n1.Srv.SetPublicIP(netip.MustParseAddr("203.0.113.22"))
		dns.Set("master.cloud.test", m.Srv.PublicIP)
		dns.Set("node-1.cloud.test", n1.Srv.PublicIP)
		began := time.Now()
		pingUntilWithin(t, m, "192.168.2.2", 60*time.Second)
		t.Logf("master and node-1 reconnected after %v", time.Since(began).Round(time.Second))
		if !testnet.Eventually(60*time.Second, func() bool {
			p1, _ := statusJSON(t, m).PathTo("k3s-node-1")
			p2, _ := statusJSON(t, n1).PathTo("k3s-master")
			return p1 == "direct" && p2 == "direct"
		}) {
			t.Errorf("master and node-1 not direct again:\n%s", m.Srv.Run(applianceBin, "status"))
		}
		t.Logf("master and node-1 direct again after %v", time.Since(began).Round(time.Second))
		// Whichever side's handshake went stale first looked the other up;
		// its handshake then taught the other side the new address.
		resolved := func(out, peer, name, to string) bool {
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, `msg="peer endpoint re-resolved" peer=`+peer+" endpoint="+name) && strings.Contains(l, " to="+to) {
					return true
				}
			}
			return false
		}
		mRe := resolved(m.Proc.Output(), "k3s-node-1", "node-1.cloud.test:5418", "203.0.113.22:5418")
		n1Re := resolved(n1.Proc.Output(), "k3s-master", "master.cloud.test:5418", "203.0.113.11:5418")
		if !mRe && !n1Re {
			t.Errorf("neither side re-resolved the other:\nmaster:\n%s\nnode-1:\n%s", m.Proc.Output(), n1.Proc.Output())
		}
		pingUntilWithin(t, n2, "192.168.2.1", 30*time.Second)
	})

	t.Run("8 SIGTERM everywhere leaves nothing", func(t *testing.T) {
		var pids []int
		for _, n := range nodes {
			pids = append(pids, k3sPID(n))
		}
		for _, n := range nodes {
			n.Stop(t)
		}
		for i, n := range nodes {
			if out, err := n.Srv.Try("ip", "link", "show", "wg0"); err == nil {
				t.Errorf("%s: wg0 left:\n%s", n.Name, out)
			}
			if owned := ownedRules(iptablesSave(t, n.Srv, "nft")); len(owned) != 0 {
				t.Errorf("%s: rules left: %v", n.Name, owned)
			}
			if processExists(pids[i]) {
				t.Errorf("%s: k3s %d left", n.Name, pids[i])
			}
			for _, sock := range []string{"/run/wireguard/wg0.sock", "/run/wgk3s/status.sock"} {
				if _, err := os.Stat(n.Srv.HostPath(sock)); !os.IsNotExist(err) {
					t.Errorf("%s: %s left", n.Name, sock)
				}
			}
		}
	})

	t.Cleanup(func() { requireNothingLeft(t, net) })
}

func pingUntilWithin(t *testing.T, n *node, dst string, timeout time.Duration) {
	t.Helper()
	n.PingUntil(t, dst, timeout)
}

// requireNothingLeft runs after the harness's cleanup (cleanups run last
// registered first): no namespace of this run and no process of ours.
func requireNothingLeft(t *testing.T, net *testnet.Net) {
	t.Helper()
	net.Close()
	if left := net.Leftovers(); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err == nil && (exe == applianceBin || exe == k3sBin) {
			t.Errorf("process left: %s (%s)", p, exe)
		}
	}
}
