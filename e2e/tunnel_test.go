//go:build linux

package e2e

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/internal/testnet"
)

func twoClouds(t *testing.T) (*testnet.Net, *node, *node) {
	t.Helper()
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	n1 := newNode(t, net.AddServer("node-1", 2), "k3s-node-1", "agent", "192.168.2.2")
	return net, m, n1
}

func TestTunnelAcrossNATs(t *testing.T) {
	net, m, n1 := twoClouds(t)
	nodes := []*node{m, n1}
	startAll(t, nodes)
	if !strings.Contains(m.Proc.Output(), "mode="+mode) {
		t.Errorf("interface.mode is %s, but the appliance runs another mode:\n%s", mode, m.Proc.Output())
	}

	// The seed's check: ping over wg0 both ways.
	pingUntil(t, m, "192.168.2.2")
	pingUntil(t, n1, "192.168.2.1")
	show := wgShow(t, m.Srv)
	if !strings.Contains(show, n1.Key.PublicKey().String()) || !strings.Contains(show, "latest handshake") {
		t.Fatalf("wg show on the master lacks node-1 with a handshake:\n%s", show)
	}
	// The peers see each other at their public (NATed) addresses.
	if !strings.Contains(show, "endpoint: 203.0.113.20:5418") {
		t.Errorf("master sees node-1 elsewhere than its public address:\n%s", show)
	}
	for _, n := range nodes {
		checkLinkKind(t, n)
	}

	t.Run("adding a peer leaves the session and a ping flow untouched", func(t *testing.T) {
		hs := handshake(t, m.Srv, n1.Key.PublicKey())
		n2 := newNode(t, net.AddServer("node-2", 3), "k3s-node-2", "agent", "192.168.2.3")
		addPeerUnderFlow(t, m, []*node{m, n1, n2}, m, "192.168.2.2")
		if got := handshake(t, m.Srv, n1.Key.PublicKey()); got != hs {
			t.Errorf("node-1's latest handshake changed from %s to %s: its session was touched", hs, got)
		}
	})

	t.Run("a broken file is rejected and nothing changes", func(t *testing.T) {
		before := wgShow(t, m.Srv, "dump")
		m.Srv.WriteFile(configPath, []byte(clusterFile(nodes, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 5", 1) })), 0o644)
		m.Reload(t, "reload rejected")
		if !strings.Contains(m.Proc.Output(), "interface.mtu: 5 is out of range") {
			t.Errorf("the rejection does not name the field:\n%s", m.Proc.Output())
		}
		if diff := cmp.Diff(stripCounters(before), stripCounters(wgShow(t, m.Srv, "dump"))); diff != "" {
			t.Errorf("wg0 changed after a rejected reload (-before +after):\n%s", diff)
		}
		pingUntil(t, m, "192.168.2.2")
	})

	t.Run("MTU and address changes take effect", func(t *testing.T) {
		n1.Address = "192.168.2.22"
		edit := func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 1380", 1) }
		for _, n := range nodes {
			n.WriteConfig(nodes, edit)
			n.Reload(t, "msg=reloaded")
		}
		for _, n := range nodes {
			if out := n.Srv.Run("ip", "link", "show", "wg0"); !strings.Contains(out, "mtu 1380") {
				t.Errorf("%s: %s", n.Name, out)
			}
		}
		if out := n1.Srv.Run("ip", "-4", "addr", "show", "wg0"); !strings.Contains(out, "192.168.2.22/24") || strings.Contains(out, "192.168.2.2/") {
			t.Errorf("node-1 address not changed:\n%s", out)
		}
		if out := wgShow(t, m.Srv, "allowed-ips"); !strings.Contains(out, "192.168.2.22/32") {
			t.Errorf("master's allowed-ips for node-1 not updated:\n%s", out)
		}
		pingUntil(t, m, "192.168.2.22")
	})

	t.Run("SIGTERM removes wg0 and its socket", func(t *testing.T) {
		for _, n := range nodes {
			n.Stop(t)
			if out, err := n.Srv.Try("ip", "link", "show", "wg0"); err == nil {
				t.Errorf("%s: wg0 still exists:\n%s", n.Name, out)
			}
			if _, err := os.Stat(n.Srv.HostPath(uapiSocket)); !os.IsNotExist(err) {
				t.Errorf("%s: socket still exists: %v", n.Name, err)
			}
		}
	})
}

// stripCounters keeps from `wg show dump` what configuration decides:
// the interface's public key and port, and per peer its key, endpoint,
// allowed IPs and keepalive, sorted (wireguard-go lists peers in map order).
// The private key, handshake times and byte counters are dropped.
func stripCounters(dump string) string {
	var out []string
	for i, l := range strings.Split(strings.TrimSpace(dump), "\n") {
		f := strings.Split(l, "\t")
		switch {
		case i == 0 && len(f) == 4: // private-key public-key listen-port fwmark
			l = strings.Join(f[1:], "\t")
		case len(f) == 8: // public-key psk endpoint allowed-ips handshake rx tx keepalive
			l = strings.Join(append(f[:4:4], f[7]), "\t")
		}
		out = append(out, l)
	}
	slices.Sort(out[1:])
	return strings.Join(out, "\n")
}

// uapiSocket is where a userspace wg0 serves wg(8); a kernel wg0 has none.
const uapiSocket = "/run/wireguard/wg0.sock"

// checkLinkKind checks that n's wg0 is what its mode makes: a kernel
// WireGuard link and no UAPI socket, or a TUN device served by the
// appliance's wireguard-go on a socket only root can use.
func checkLinkKind(t *testing.T, n *node) {
	t.Helper()
	out := n.Srv.Run("ip", "-d", "link", "show", "wg0")
	fi, err := os.Stat(n.Srv.HostPath(uapiSocket))
	switch n.Bin.Mode {
	case "kernel":
		if !strings.Contains(out, "\n    wireguard ") {
			t.Errorf("%s: wg0 is not a kernel WireGuard link:\n%s", n.Name, out)
		}
		if err == nil {
			t.Errorf("%s: a kernel wg0 with a UAPI socket %s", n.Name, uapiSocket)
		}
	case "userspace":
		if !strings.Contains(out, "\n    tun ") {
			t.Errorf("%s: wg0 is not a TUN device:\n%s", n.Name, out)
		}
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: UAPI socket: %v; want it present and not open to group or others", n.Name, err)
		}
	}
}

func TestTunnelInteropWithStockWireguardGo(t *testing.T) {
	testnet.Requirements(t, "wireguard-go", "wg-quick")
	_, m, n1 := twoClouds(t)
	m.WriteConfig([]*node{m, n1}, nil)
	m.Start(t)

	// node-1 runs the stock Debian wireguard-go, configured the seed's way:
	// a wg0.conf with [Interface] and [Peer], loaded with wg setconf.
	conf := "[Interface]\nPrivateKey = " + n1.Key.String() + "\nAddress = 192.168.2.2\nListenPort = 5418\n\n" +
		"[Peer]\nPublicKey = " + m.Key.PublicKey().String() + "\nEndpoint = 203.0.113.10:5418\nAllowedIPs = 192.168.2.1/32\nPersistentKeepalive = 25\n"
	n1.Srv.WriteFile("/run/wgk3s/wg0.conf", []byte(conf), 0o600)
	// Debian's wireguard-go refuses to run on a kernel that could have the
	// module unless told otherwise; this kernel has none.
	stock := n1.Srv.Start("env", "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1", "wireguard-go", "-f", "wg0")
	if !testnet.Eventually(10*time.Second, func() bool {
		_, err := os.Stat(n1.Srv.HostPath("/run/wireguard/wg0.sock"))
		return err == nil
	}) {
		t.Fatalf("stock wireguard-go did not start:\n%s", stock.Output())
	}
	n1.Srv.Run("bash", "-c", "wg setconf wg0 <(wg-quick strip /run/wgk3s/wg0.conf)")
	n1.Srv.Run("ip", "addr", "add", "192.168.2.2/24", "dev", "wg0")
	n1.Srv.Run("ip", "link", "set", "wg0", "up")

	pingUntil(t, m, "192.168.2.2")
	pingUntil(t, n1, "192.168.2.1")
	if out := wgShow(t, n1.Srv); !strings.Contains(out, "latest handshake") {
		t.Errorf("the stock side shows no handshake:\n%s", out)
	}
	stock.Signal(syscall.SIGTERM)
}

func TestTunnelStartsAfterAKilledRun(t *testing.T) {
	_, m, n1 := twoClouds(t)
	nodes := []*node{m, n1}
	for _, n := range nodes {
		n.WriteConfig(nodes, nil)
	}
	n1.Start(t)
	m.Start(t)
	m.Proc.Signal(syscall.SIGKILL)
	m.Proc.Wait(5 * time.Second)
	if mode == "kernel" {
		// A killed kernel-mode run leaves wg0 itself: the kernel holds it.
		if out := m.Srv.Run("ip", "-d", "link", "show", "wg0"); !strings.Contains(out, "wireguard") {
			t.Fatalf("expected the killed run's kernel wg0:\n%s", out)
		}
		m.Srv.Run("ip", "addr", "add", "10.99.0.1/24", "dev", "wg0")
	} else {
		// The killed run left its UAPI socket; add a leftover wg0 as a
		// killed kernel-mode run would leave.
		if _, err := os.Stat(m.Srv.HostPath(uapiSocket)); err != nil {
			t.Fatalf("expected a stale socket after SIGKILL: %v", err)
		}
		m.Srv.Run("ip", "tuntap", "add", "dev", "wg0", "mode", "tun")
		m.Srv.Run("ip", "addr", "add", "10.99.0.1/24", "dev", "wg0")
		// The record a kernel-mode run makes of its link, so that the
		// leftover is the appliance's own (a link it did not make is never
		// removed).
		index, _, _ := strings.Cut(m.Srv.Run("ip", "-o", "link", "show", "wg0"), ":")
		m.Srv.WriteFile("/run/wgk3s/link-wg0", []byte(index+"\n"), 0o600)
	}

	m.Start(t)
	if !strings.Contains(m.Proc.Output(), "removing a leftover interface") {
		t.Errorf("no leftover removal logged:\n%s", m.Proc.Output())
	}
	pingUntil(t, m, "192.168.2.2")
	if out := m.Srv.Run("ip", "-4", "addr", "show", "wg0"); strings.Contains(out, "10.99.0.1") {
		t.Errorf("the leftover's address survived:\n%s", out)
	}
}

// TestCleanupAfterAKilledRun: `appliance cleanup` removes what a SIGKILLed
// run left: in kernel mode the wg0 link itself (the kernel keeps it after
// the process dies), in both modes the rules and any UAPI socket.
func TestCleanupAfterAKilledRun(t *testing.T) {
	_, m, n1 := twoClouds(t)
	startAll(t, []*node{m, n1})
	pingUntil(t, m, "192.168.2.2")
	m.Proc.Signal(syscall.SIGKILL)
	m.Proc.Wait(5 * time.Second)
	_, err := m.Srv.Try("ip", "link", "show", "wg0")
	if left := err == nil; left != (mode == "kernel") {
		t.Fatalf("after SIGKILL in %s mode, wg0 left = %v", mode, left)
	}
	if len(ownedRules(m.Srv.Run("iptables-save"))) == 0 {
		t.Fatal("test bug: the killed run left no rules to clean")
	}
	out := m.Srv.Run(applianceBin, "cleanup", "--config", configPath)
	if _, err := m.Srv.Try("ip", "link", "show", "wg0"); err == nil {
		t.Errorf("wg0 left after cleanup:\n%s", out)
	}
	if owned := ownedRules(m.Srv.Run("iptables-save")); len(owned) != 0 {
		t.Errorf("rules left after cleanup: %v", owned)
	}
	// On an nf_tables host the cleanup looks at the legacy backend without
	// making its tables (later iptables-save runs would warn about them).
	if strings.Contains(m.Srv.Run("iptables", "-V"), "nf_tables") {
		if legacy := m.Srv.Run("iptables-legacy-save"); strings.Contains(legacy, "*") {
			t.Errorf("cleanup made legacy iptables tables on an nf_tables host:\n%s", legacy)
		}
	}
	if _, err := os.Stat(m.Srv.HostPath(uapiSocket)); !os.IsNotExist(err) {
		t.Errorf("socket left after cleanup: %v", err)
	}
	// And the node starts again.
	m.Start(t)
	pingUntil(t, m, "192.168.2.2")
}

// TestModeChoice: interface.mode auto picks kernel WireGuard where the
// kernel can make a WireGuard link and says so, and userspace where it
// cannot, saying why; wg0 is the kind of link the mode makes.
func TestModeChoice(t *testing.T) {
	_, m, n1 := twoClouds(t)
	m.Bin.Mode, n1.Bin.Mode = "auto", "auto"
	startAll(t, []*node{m, n1})
	want, why := "userspace", "so the embedded wireguard-go runs on a TUN device"
	if modeUnsupported("kernel") == "" {
		want, why = "kernel", "or later and has the WireGuard module"
	}
	for _, n := range []*node{m, n1} {
		out := n.Proc.Output()
		if !strings.Contains(out, `msg="WireGuard mode chosen" mode=`+want) || !strings.Contains(out, why) {
			t.Errorf("%s: want mode %s chosen because %q:\n%s", n.Name, want, why, out)
		}
		n.Bin.Mode = want
		checkLinkKind(t, n)
	}
	pingUntil(t, m, "192.168.2.2")
	pingUntil(t, n1, "192.168.2.1")
	if r := statusJSON(t, m); r.Mode != want {
		t.Errorf("status mode = %q, want %q", r.Mode, want)
	}
}

// TestKernelAndUserspacePeers: a kernel-mode node and a userspace one form
// a mesh (the same protocol, two implementations), and a reload that adds
// a peer on the kernel side loses no packet of a running flow.
func TestKernelAndUserspacePeers(t *testing.T) {
	if why := modeUnsupported("kernel"); why != "" {
		t.Skip(why)
	}
	net, m, n1 := twoClouds(t)
	m.Bin.Mode, n1.Bin.Mode = "kernel", "userspace"
	nodes := []*node{m, n1}
	startAll(t, nodes)
	checkLinkKind(t, m)
	checkLinkKind(t, n1)
	pingUntil(t, m, "192.168.2.2")
	pingUntil(t, n1, "192.168.2.1")
	if !strings.Contains(wgShow(t, m.Srv), "latest handshake") || !strings.Contains(wgShow(t, n1.Srv), "latest handshake") {
		t.Errorf("no handshake shown:\n%s\n%s", wgShow(t, m.Srv), wgShow(t, n1.Srv))
	}

	n2 := newNode(t, net.AddServer("node-2", 3), "k3s-node-2", "agent", "192.168.2.3")
	addPeerUnderFlow(t, m, append(nodes, n2), n1, "192.168.2.1")
}

// addPeerUnderFlow reloads m with nodes, whose last is new, while a
// 100-packet ping flow runs from src to dst, and requires that the flow
// loses nothing and that m has the new peer.
func addPeerUnderFlow(t *testing.T, m *node, nodes []*node, src *node, dst string) {
	t.Helper()
	flow := src.Srv.Start("ping", "-n", "-q", "-c", "100", "-i", "0.03", "-W", "1", dst)
	time.Sleep(500 * time.Millisecond) // let the flow start before the reload
	m.WriteConfig(nodes, nil)
	m.Reload(t, "msg=reloaded")
	if exited, _ := flow.Wait(30 * time.Second); !exited {
		t.Fatal("ping flow did not finish")
	}
	if !strings.Contains(flow.Output(), "100 packets transmitted, 100 received") {
		t.Errorf("the ping flow from %s to %s lost packets across %s's reload:\n%s", src.Name, dst, m.Name, flow.Output())
	}
	if added := nodes[len(nodes)-1]; !strings.Contains(wgShow(t, m.Srv, "peers"), added.Key.PublicKey().String()) {
		t.Errorf("%s was not added on %s", added.Name, m.Name)
	}
}

// TestBatchSizeCap: runtime.batch_size caps wireguard-go's batches (the
// device reports the cap), lowers wg0's gso_max_segs to match, and a bulk
// TCP transfer through the capped tunnel, with the fewest packets in flight
// allowed, completes and loses no TSO super-packet to a TUN read with too
// few buffers.
func TestBatchSizeCap(t *testing.T) {
	if mode != "userspace" {
		t.Skip("runtime.batch_size applies to userspace wg0")
	}
	testnet.Requirements(t, "iperf3")
	_, m, n1 := twoClouds(t)
	nodes := []*node{m, n1}
	edit := func(s string) string { return s + "runtime:\n  batch_size: 8\n  inflight_packets: 64\n" }
	for _, n := range nodes {
		n.WriteConfig(nodes, edit)
		n.Start(t)
		if !strings.Contains(n.Proc.Output(), `msg="wireguard-go memory bounds" interface=wg0 batch_size=8 inflight_packets=64`) {
			t.Errorf("%s: the device does not report batch size 8:\n%s", n.Name, n.Proc.Output())
		}
		if out := n.Srv.Run("ip", "-d", "link", "show", "wg0"); !strings.Contains(out, " gso_max_segs 8 ") {
			t.Errorf("%s: wg0's gso_max_segs is not 8:\n%s", n.Name, out)
		}
	}
	pingUntil(t, n1, "192.168.2.1")
	m.Srv.Start("iperf3", "-s", "-1")
	var out string
	if !testnet.Eventually(10*time.Second, func() bool {
		var err error
		out, err = n1.Srv.Try("iperf3", "-c", "192.168.2.1", "-t", "3", "-P", "2")
		return err == nil
	}) {
		t.Fatalf("iperf3 through the capped tunnel:\n%s", out)
	}
	for _, n := range nodes {
		if strings.Contains(n.Proc.Output(), "more segments than a batch holds") {
			t.Errorf("%s dropped super-packets:\n%s", n.Name, n.Proc.Output())
		}
		// Packets are counted out as they are sent or written: had they not
		// been recognised, reads would have waited out the bound.
		if strings.Contains(n.Proc.Output(), "sent or wrote none of them") {
			t.Errorf("%s: the inflight bound stalled the tunnel:\n%s", n.Name, n.Proc.Output())
		}
	}
}
