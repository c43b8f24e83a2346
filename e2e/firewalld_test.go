//go:build linux

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// firewalldRules is what firewalld 0.6 (CentOS 7) loads with the default
// zone public (ssh; dhcpv6-client is in ip6tables) and no interface assigned: INPUT and
// FORWARD end with a REJECT at positions 7 and 9.
const firewalldRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FORWARD_IN_ZONES - [0:0]
:FORWARD_IN_ZONES_SOURCE - [0:0]
:FORWARD_OUT_ZONES - [0:0]
:FORWARD_OUT_ZONES_SOURCE - [0:0]
:FORWARD_direct - [0:0]
:FWDI_public - [0:0]
:FWDI_public_allow - [0:0]
:FWDI_public_deny - [0:0]
:FWDO_public - [0:0]
:FWDO_public_allow - [0:0]
:FWDO_public_deny - [0:0]
:INPUT_ZONES - [0:0]
:INPUT_ZONES_SOURCE - [0:0]
:INPUT_direct - [0:0]
:IN_public - [0:0]
:IN_public_allow - [0:0]
:IN_public_deny - [0:0]
:OUTPUT_direct - [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -i lo -j ACCEPT
-A INPUT -j INPUT_direct
-A INPUT -j INPUT_ZONES_SOURCE
-A INPUT -j INPUT_ZONES
-A INPUT -m conntrack --ctstate INVALID -j DROP
-A INPUT -j REJECT --reject-with icmp-host-prohibited
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -i lo -j ACCEPT
-A FORWARD -j FORWARD_direct
-A FORWARD -j FORWARD_IN_ZONES_SOURCE
-A FORWARD -j FORWARD_IN_ZONES
-A FORWARD -j FORWARD_OUT_ZONES_SOURCE
-A FORWARD -j FORWARD_OUT_ZONES
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -j REJECT --reject-with icmp-host-prohibited
-A OUTPUT -j OUTPUT_direct
-A FORWARD_IN_ZONES -g FWDI_public
-A FORWARD_OUT_ZONES -g FWDO_public
-A FWDI_public -j FWDI_public_deny
-A FWDI_public -j FWDI_public_allow
-A FWDI_public -p icmp -j ACCEPT
-A FWDO_public -j FWDO_public_deny
-A FWDO_public -j FWDO_public_allow
-A INPUT_ZONES -g IN_public
-A IN_public -j IN_public_deny
-A IN_public -j IN_public_allow
-A IN_public -p icmp -j ACCEPT
-A IN_public_allow -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
`

// loadFirewalld loads firewalld's default rules into srv with
// iptables-legacy, CentOS 7's backend.
func loadFirewalld(t *testing.T, srv *testnet.Server) {
	t.Helper()
	srv.WriteFile("/run/wgk3s/firewalld.rules", []byte(firewalldRules), 0o600)
	srv.Run("sh", "-c", "iptables-legacy-restore < /run/wgk3s/firewalld.rules")
}

// tcpOpen reports whether a TCP connection from srv (or, with srv nil,
// from ns) to addr:port is accepted within 5 s.
func tcpOpen(srv *testnet.Server, ns, addr string, port int) bool {
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr, port)
	if srv != nil {
		_, err := srv.Try("timeout", "5", "bash", "-c", script)
		return err == nil
	}
	return testnet.RunIn(ns, "timeout", "5", "bash", "-c", script) == nil
}

// TestFirewalldDefaultRules runs the cluster on servers whose firewall is
// CentOS 7's default: everything the cluster needs must pass over wg0
// (the k3s API, the kubelet's port, flannel's VXLAN and pod traffic that
// is forwarded), and from the internet only the WireGuard port is open.
func TestFirewalldDefaultRules(t *testing.T) {
	testnet.Requirements(t, "iptables-legacy-restore", "bridge")
	net, m, n1 := twoClouds(t)
	for _, srv := range []*testnet.Server{m.Srv, n1.Srv} {
		loadFirewalld(t, srv)
	}
	kubelet := testnet.Accept(n1.Srv.Listen("tcp4", "0.0.0.0:10250"))
	vxlan := n1.Srv.ListenPacket("udp4", "0.0.0.0:8472")
	startAll(t, []*node{m, n1})
	if !strings.Contains(m.Proc.Output(), "firewall=legacy") || !strings.Contains(m.Proc.Output(), "nothing needs to be done by hand") {
		t.Errorf("the appliance did not use and describe firewalld's legacy rules:\n%s", m.Proc.Output())
	}

	t.Run("the agent joins the k3s API over wg0", func(t *testing.T) {
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-1") }) {
			t.Fatalf("the agent never reached 192.168.2.1:6443:\n%s\n%s", events(m.Srv), n1.Proc.Output())
		}
	})
	t.Run("the kubelet port on the agent, over wg0", func(t *testing.T) {
		if !tcpOpen(m.Srv, "", "192.168.2.2", 10250) {
			t.Fatal("192.168.2.2:10250 refused over wg0")
		}
		select {
		case <-kubelet:
		case <-time.After(5 * time.Second):
			t.Fatal("the listener saw no connection")
		}
	})
	t.Run("flannel's VXLAN port over wg0", func(t *testing.T) {
		m.Srv.Run("bash", "-c", "echo vxlan > /dev/udp/192.168.2.2/8472")
		buf := make([]byte, 16)
		vxlan.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, _, err := vxlan.ReadFrom(buf); err != nil || string(buf[:n]) != "vxlan\n" {
			t.Fatalf("udp/8472 over wg0: %q, %v", buf[:n], err)
		}
		vxlan.Close() // flannel.1 binds the port next
	})
	t.Run("pod traffic forwarded from flannel.1 to cni0", func(t *testing.T) {
		pod := net.AddNamespace("pod")
		flannel(t, m.Srv, "192.168.2.1", "10.42.0.0", "02:00:00:00:00:01", "192.168.2.2", "10.42.1.0", "02:00:00:00:00:02")
		flannel(t, n1.Srv, "192.168.2.2", "10.42.1.0", "02:00:00:00:00:02", "192.168.2.1", "10.42.0.0", "02:00:00:00:00:01")
		// From the root mount namespace, where both namespaces are named.
		if out, err := exec.Command("ip", "-n", n1.Srv.NS, "link", "add", "cni0", "type", "veth", "peer", "name", "eth0", "netns", pod).CombinedOutput(); err != nil {
			t.Fatalf("creating the pod's veth: %v: %s", err, out)
		}
		n1.Srv.Run("ip", "addr", "add", "10.42.1.1/24", "dev", "cni0")
		n1.Srv.Run("ip", "link", "set", "cni0", "up")
		for _, args := range [][]string{{"addr", "add", "10.42.1.2/24", "dev", "eth0"}, {"link", "set", "eth0", "up"}, {"route", "add", "default", "via", "10.42.1.1"}} {
			if err := testnet.RunIn(pod, "ip", args...); err != nil {
				t.Fatal(err)
			}
		}
		out, err := m.Srv.Try("ping", "-c", "3", "-W", "2", "-I", "10.42.0.0", "10.42.1.2")
		if testnet.Received(out) != 3 {
			t.Fatalf("master -> pod 10.42.1.2 through VXLAN in wg0: %v\n%s\n%s", err, out, n1.Srv.Run("iptables-legacy", "-S"))
		}
	})
	t.Run("from the internet only the WireGuard port is open", func(t *testing.T) {
		if tcpOpen(nil, net.Internet, n1.Srv.PublicIP.String(), 10250) {
			t.Error("the kubelet port is open to the internet")
		}
		if got := n1.Srv.Run("iptables-legacy", "-S", "WGK3S-INPUT"); !strings.Contains(got, "--dport 5418") {
			t.Errorf("no WireGuard port rule:\n%s", got)
		}
	})
	t.Run("a firewalld reload that leaves the jump behind its REJECT", func(t *testing.T) {
		// firewalld's flush, our reconcile re-adding the jump, then its
		// REJECT inserted at position 1.
		n1.Srv.Run("iptables-legacy", "-F", "INPUT")
		if !testnet.Eventually(15*time.Second, func() bool {
			return strings.Contains(n1.Srv.Run("iptables-legacy", "-S", "INPUT"), "-j WGK3S-INPUT")
		}) {
			t.Fatal("the reconcile did not put the jump back")
		}
		n1.Srv.Run("iptables-legacy", "-I", "INPUT", "1", "-j", "REJECT", "--reject-with", "icmp-host-prohibited")
		first := func() string { return strings.Split(n1.Srv.Run("iptables-legacy", "-S", "INPUT"), "\n")[1] }
		if !testnet.Eventually(15*time.Second, func() bool { return strings.HasSuffix(first(), "-j WGK3S-INPUT") }) {
			t.Fatalf("INPUT still starts with %q", first())
		}
		if !tcpOpen(m.Srv, "", "192.168.2.2", 10250) {
			t.Fatal("tunnel traffic does not pass after the jump moved back")
		}
		if !strings.Contains(n1.Proc.Output(), "moved it back to the top") {
			t.Errorf("the move was not logged:\n%s", n1.Proc.Output())
		}
	})
}

// flannel sets up what flannel's VXLAN backend makes on a node: flannel.1
// over wg0 with this node's subnet address, and the route, neighbour and
// forwarding entry for the other node's subnet.
func flannel(t *testing.T, srv *testnet.Server, local, addr, mac, remote, remoteAddr, remoteMAC string) {
	t.Helper()
	subnet := strings.TrimSuffix(remoteAddr, ".0") + ".0/24"
	srv.Run("ip", "link", "add", "flannel.1", "address", mac, "type", "vxlan", "id", "1", "local", local, "dev", "wg0", "dstport", "8472", "nolearning")
	srv.Run("ip", "addr", "add", addr+"/32", "dev", "flannel.1")
	srv.Run("ip", "link", "set", "flannel.1", "up")
	srv.Run("ip", "route", "add", subnet, "via", remoteAddr, "dev", "flannel.1", "onlink")
	srv.Run("ip", "neigh", "add", remoteAddr, "lladdr", remoteMAC, "dev", "flannel.1", "nud", "permanent")
	srv.Run("bridge", "fdb", "append", remoteMAC, "dev", "flannel.1", "dst", remote)
}
