//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// doctorSays polls `appliance doctor` on n until it exits with code and
// its output holds every one of want (case-sensitive), and returns the
// output. Each fault takes a keepalive or two to show.
func doctorSays(t *testing.T, n *node, code int, want ...string) string {
	t.Helper()
	var out string
	var got int
	ok := testnet.Eventually(60*time.Second, func() bool {
		start := time.Now()
		got, out = exitCode(t, n.Srv, "doctor")
		if took := time.Since(start); took > slowestDoctor {
			slowestDoctor = took
		}
		if got != code {
			return false
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("doctor on %s: want exit %d saying %q; last exit %d:\n%s", n.Name, code, want, got, out)
	}
	return out
}

// slowestDoctor is the longest one doctor run took (the bound
// is 10 s; logged, not asserted: CI machines are loaded).
var slowestDoctor time.Duration

// TestDoctorNamesEachFault: three nodes in three clouds; one fault at a
// time is made on node-2's side and taken away. Each time doctor exits 1
// naming the node and the cause (told apart from a node that is down),
// and 0 once the fault is gone.
func TestDoctorNamesEachFault(t *testing.T) {
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	dns := net.StartDNS()
	m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	n1 := newNode(t, net.AddServer("node-1", 2), "k3s-node-1", "agent", "192.168.2.2")
	n2 := newNode(t, net.AddServer("node-2", 3), "k3s-node-2", "agent", "192.168.2.3")
	n2.Endpoint = fmt.Sprintf("node-2.cloud.test:%d", testnet.Port)
	dns.Set("node-2.cloud.test", n2.Srv.PublicIP)
	nodes := []*node{m, n1, n2}
	fast := func(s string) string {
		return strings.Replace(s, "persistent_keepalive: 25s", "persistent_keepalive: 5s", 1)
	}
	for _, n := range nodes {
		n.WriteConfig(nodes, fast)
		n.Start(t)
	}
	for _, n := range nodes {
		doctorSays(t, n, 0, n.Name+": healthy")
	}
	backend := statusJSON(t, n2).Firewall.Backend

	t.Run("a security group that drops UDP to node-2", func(t *testing.T) {
		rule := []string{"FORWARD", "-i", "up0", "-p", "udp", "--dport", fmt.Sprint(testnet.Port), "-j", "DROP"}
		n2.Srv.RunRouter("iptables", append([]string{"-w", "-I"}, rule...)...)
		out := doctorSays(t, n2, 1, "[udp] k3s-node-2: nothing comes back from any of its 2 peers", "open UDP 5418 inbound in k3s-node-2's provider security group")
		t.Logf("doctor on node-2:\n%s", out)
		out = doctorSays(t, n1, 1, "[udp] k3s-node-2: k3s-node-2's handshakes arrive here but it never gets the answers", "open UDP 5418 inbound in k3s-node-2's provider security group")
		t.Logf("doctor on node-1:\n%s", out)
		n2.Srv.RunRouter("iptables", append([]string{"-w", "-D"}, rule...)...)
		doctorSays(t, n2, 0, "healthy")
		doctorSays(t, n1, 0, "healthy")
	})

	t.Run("a network with a smaller MTU that sends no ICMP", func(t *testing.T) {
		n2.Srv.SetBridgePortMTU(1400)
		out := doctorSays(t, n1, 1, "[mtu] k3s-node-2: the path between k3s-node-1 and k3s-node-2 carries tunnel packets of at most 1320 bytes", "set interface.mtu: 1320")
		t.Logf("doctor on node-1:\n%s", out)
		n2.Srv.SetBridgePortMTU(1500)
		doctorSays(t, n1, 0, "healthy")
	})

	t.Run("node-2's key is not the one the file names", func(t *testing.T) {
		if mode == "kernel" {
			t.Skip("the kernel's WireGuard does not tell which datagrams came from an address: the key check needs the userspace data path")
		}
		other, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		// node-2 made a new key and put it in its own file; the master's
		// file, and every other node's, still name the old one.
		setKey := func(k wgtypes.Key) {
			n2.Stop(t)
			n2.Key = k
			n2.Srv.WriteFile(testnet.KeyPath, []byte(k.String()+"\n"), 0o600)
			n2.WriteConfig(nodes, fast)
			n2.Start(t)
		}
		old := n2.Key
		setKey(other)
		out := doctorSays(t, n1, 1, "[key] k3s-node-2: datagrams ", "but do not authenticate")
		t.Logf("doctor on node-1:\n%s", out)
		setKey(old)
		doctorSays(t, n1, 0, "healthy")
		doctorSays(t, n2, 0, "healthy")
	})

	t.Run("node-2's endpoint name does not resolve", func(t *testing.T) {
		dns.Delete("node-2.cloud.test")
		out := doctorSays(t, n1, 1, "[dns] k3s-node-2: the endpoint name node-2.cloud.test does not resolve")
		t.Logf("doctor on node-1:\n%s", out)
		dns.Set("node-2.cloud.test", n2.Srv.PublicIP)
		doctorSays(t, n1, 0, "healthy")
	})

	t.Run("a host firewall rule on node-2 that drops the port", func(t *testing.T) {
		ipt := "iptables-" + backend
		rule := []string{"INPUT", "-p", "udp", "--dport", fmt.Sprint(testnet.Port), "-j", "DROP"}
		n2.Srv.Run(ipt, append([]string{"-w", "-t", "mangle", "-I"}, rule...)...)
		out := doctorSays(t, n2, 1, "[firewall] k3s-node-2: this host's firewall drops WireGuard's port 5418", "iptables -t mangle -A INPUT -p udp")
		t.Logf("doctor on node-2:\n%s", out)
		if strings.Contains(out, "security group") {
			t.Errorf("a host rule is not the provider's security group:\n%s", out)
		}
		n2.Srv.Run(ipt, append([]string{"-w", "-t", "mangle", "-D"}, rule...)...)
		doctorSays(t, n2, 0, "healthy")
	})

	t.Cleanup(func() { t.Logf("timing: the slowest doctor run took %s", slowestDoctor.Round(time.Millisecond)) })

	t.Run("appliance ping says the path and the round trips", func(t *testing.T) {
		out, err := n1.Srv.Try(applianceBin, "ping", "k3s-node-2", "-c", "2")
		if err != nil || strings.Count(out, "pong from k3s-node-2 (direct, 203.0.113.30:5418)") != 2 || !strings.Contains(out, "through wg0 in") {
			t.Fatalf("ping: %v\n%s", err, out)
		}
		t.Logf("appliance ping k3s-node-2 -c 2 on node-1:\n%s", out)
		code, out := exitCode(t, n1.Srv, "ping", "k3s-node-9")
		if code != 1 || !strings.Contains(out, `"k3s-node-9" is no peer of k3s-node-1; its peers are: k3s-master, k3s-node-2`) {
			t.Fatalf("ping of no peer: exit %d\n%s", code, out)
		}
	})
}
