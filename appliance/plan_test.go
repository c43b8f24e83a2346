package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestNewPlan(t *testing.T) {
	c := newCluster(t, 3)
	master := c.plan(t, 3, 0, nil)
	if master.K3s.Role() != "server" || len(master.K3s.WaitFor) != 0 || master.Egress != "eth0" || len(master.Tunnel.Peers) != 2 {
		t.Errorf("master plan: role %s, wait for %q, egress %s, %d peers", master.K3s.Role(), master.K3s.WaitFor, master.Egress, len(master.Tunnel.Peers))
	}
	agent := c.plan(t, 3, 2, nil)
	if agent.K3s.Role() != "agent" || !slices.Equal(agent.K3s.WaitFor, []string{"192.168.2.1:6443"}) || agent.Tunnel.Address.String() != "192.168.2.3/24" {
		t.Errorf("agent plan: role %s, wait for %q, address %s", agent.K3s.Role(), agent.K3s.WaitFor, agent.Tunnel.Address)
	}
	if master.Mode.Mode != configs.ModeUserspace || !strings.Contains(master.Mode.Reason, "older than") {
		t.Errorf("mode on a 3.10 kernel = %+v", master.Mode)
	}
	if len(master.Problems) != 0 {
		t.Errorf("problems on a good host: %v", master.Problems)
	}
}

// TestServersPlan: with servers in the file the master starts etcd, a
// server joins it with the server token (fetched over wg0), and an agent
// waits for whichever server answers; the sync hands each role its token.
func TestServersPlan(t *testing.T) {
	c := newCluster(t, 4)
	servers := func(s string) string { // node-1 and node-2 become servers
		s = strings.Replace(s, "role: agent", "role: server", 2)
		return s
	}
	master, server, agent := c.plan(t, 4, 0, servers), c.plan(t, 4, 1, servers), c.plan(t, 4, 3, servers)
	has := func(args []string, want ...string) bool {
		for i := 0; i+len(want) <= len(args); i++ {
			if slices.Equal(args[i:i+len(want)], want) {
				return true
			}
		}
		return false
	}
	for _, want := range [][]string{{"--cluster-init"}, {"--etcd-arg=heartbeat-interval=300"}, {"--etcd-arg=election-timeout=3000"},
		{"--token-file", "/etc/wgk3s/token"}, {"--agent-token-file", "/etc/wgk3s/agent-token"}} {
		if !has(master.K3s.Args, want...) {
			t.Errorf("master argv %q lacks %q", master.K3s.Args, want)
		}
	}
	if got := server.K3s.Args; got[0] != "server" || !has(got, "--server", "https://192.168.2.1:6443") || !has(got, "--token-file", "/etc/wgk3s/token") ||
		has(got, "--cluster-init") || !has(got, "--agent-token-file", "/etc/wgk3s/agent-token") || !has(got, "--node-ip", "192.168.2.2") || !has(got, "--etcd-arg=election-timeout=3000") {
		t.Errorf("server argv = %q", got)
	}
	if !slices.Equal(server.K3s.WaitFor, []string{"192.168.2.1:6443"}) || server.K3s.TokenFile != "/etc/wgk3s/token" || !server.K3s.FetchToken {
		t.Errorf("server waits for %q, token %s (fetch %v)", server.K3s.WaitFor, server.K3s.TokenFile, server.K3s.FetchToken)
	}
	if want := []string{"192.168.2.1:6443", "192.168.2.2:6443", "192.168.2.3:6443"}; !slices.Equal(agent.K3s.WaitFor, want) || agent.K3s.TokenFile != "/etc/wgk3s/agent-token" {
		t.Errorf("agent waits for %q, want %q; token %s", agent.K3s.WaitFor, want, agent.K3s.TokenFile)
	}
	if len(master.Warnings) != 0 {
		t.Errorf("three servers: warnings %q", master.Warnings)
	}
	// Two servers: no fault tolerance, said; the operator's own etcd args win.
	two := c.plan(t, 4, 0, func(s string) string {
		s = strings.Replace(s, "role: agent", "role: server", 1)
		return strings.Replace(s, "k3s:\n", "k3s:\n  server_args: [\"--etcd-arg=election-timeout=9000\"]\n", 1)
	})
	if !slices.ContainsFunc(two.Warnings, func(w string) bool { return strings.Contains(w, "tolerate no failure") }) {
		t.Errorf("two servers: warnings %q", two.Warnings)
	}
	if has(two.K3s.Args, "--etcd-arg=election-timeout=3000") || !has(two.K3s.Args, "--etcd-arg=election-timeout=9000") {
		t.Errorf("the file's etcd arg did not win: %q", two.K3s.Args)
	}
	// The master alone stays on sqlite.
	alone := c.plan(t, 2, 0, nil)
	if has(alone.K3s.Args, "--cluster-init") || slices.ContainsFunc(alone.K3s.Args, func(a string) bool { return strings.HasPrefix(a, "--etcd-arg") }) {
		t.Errorf("a master without servers: %q", alone.K3s.Args)
	}
}

func TestNewPlanListsEveryHostProblem(t *testing.T) {
	c := newCluster(t, 2)
	cfg := c.config(t, 2, 0, func(s string) string {
		return strings.Replace(s, "network: 192.168.2.0/24\ninterface:\n", "network: 192.168.2.0/24\ninterface:\n  mode: kernel\n", 1) +
			"firewall:\n  egress_interface: eth9\n"
	})
	h := fakeHost{release: "6.1.0-13-amd64", noModule: errors.New("has no WireGuard module"), preflightErr: errors.New("k3s.binary /usr/local/bin/k3s is missing")}
	p := NewPlan(cfg, h)
	var got []string
	for _, e := range p.Problems {
		got = append(got, e.Error())
	}
	want := []string{"interface.mode is kernel", `firewall.egress_interface "eth9"`, "is missing"}
	if len(got) != len(want) {
		t.Fatalf("problems = %q, want %d", got, len(want))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("problem %d = %q, want it to mention %q", i, got[i], want[i])
		}
	}
	if p.Egress != "<eth9>" || p.Err() == nil {
		t.Errorf("egress %q, Err %v", p.Egress, p.Err())
	}
	var out bytes.Buffer
	p.Print(&out)
	if !strings.Contains(out.String(), "Problems on this host\n  - interface.mode is kernel") {
		t.Errorf("Print does not list the problems:\n%s", out.String())
	}
}

func TestPrintShowsThePlan(t *testing.T) {
	p := newCluster(t, 3).plan(t, 3, 1, nil)
	var out bytes.Buffer
	p.Print(&out)
	for _, want := range []string{
		"Plan for node-1 (agent), from test.yaml",
		"mode         userspace: kernel 3.10.0-1160.el7.x86_64 is older than 5.15.0",
		"interface    wg0, address 192.168.2.2/24, mtu 1420, listening on udp/5418",
		"Peers (full mesh: 2)",
		"net.ipv4.ip_forward = 1",
		"-t filter -I INPUT -m comment --comment wgk3s -j WGK3S-INPUT",
		"/usr/local/bin/k3s agent --server https://192.168.2.1:6443",
		"agent token   /etc/wgk3s/agent-token (--token-file)",
		"Sync (edit once)\n  following the master at 192.168.2.1:5419 over wg0",
		"memory limit      96 MiB",
		"inflight packets  128 per direction",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Print lacks %q:\n%s", want, out.String())
		}
	}
}

// TestAnAgentHoldingTheServerTokenIsWarned: agents need only the agent
// token; a server token file left from before is pointed out.
func TestAnAgentHoldingTheServerTokenIsWarned(t *testing.T) {
	c := newCluster(t, 2)
	p := NewPlan(c.config(t, 2, 1, nil), fakeHost{files: map[string]bool{"/etc/wgk3s/token": true}})
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "rm /etc/wgk3s/token") {
		t.Errorf("warnings = %q", p.Warnings)
	}
	if m := NewPlan(c.config(t, 2, 0, nil), fakeHost{files: map[string]bool{"/etc/wgk3s/token": true}}); len(m.Warnings) != 0 {
		t.Errorf("the master is warned about its own token: %q", m.Warnings)
	}
}

// clusterOf returns a valid cluster file with n nodes in 10.100.0.0/16.
func clusterOf(b *testing.B, n int) []byte {
	b.Helper()
	var s strings.Builder
	s.WriteString("network: 10.100.0.0/16\nnodes:\n")
	for i := 0; i < n; i++ {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		role := "agent"
		if i == 0 {
			role = "master"
		}
		fmt.Fprintf(&s, "  - name: node-%d\n    role: %s\n    address: 10.100.%d.%d\n    endpoint: node-%d.cloud.test:5418\n    public_key: %q\n",
			i, role, (i+1)/250, (i+1)%250+1, i, k.PublicKey())
	}
	return []byte(s.String())
}

// BenchmarkPlan1000 validates a 1000-node cluster file and plans this
// node's tunnel, firewall and k3s argv: the work a reload does before it
// touches the system (on a fake host: no netlink or exec).
func BenchmarkPlan1000(b *testing.B) {
	data := clusterOf(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		cl, err := configs.Parse(data, "bench.yaml")
		if err != nil {
			b.Fatal(err)
		}
		p := NewPlan(&configs.Config{Cluster: cl, Self: cl.Nodes[1]}, fakeHost{})
		if len(p.Tunnel.Peers) != 999 || len(p.Firewall.Rules) == 0 || p.K3s.Role() != "agent" {
			b.Fatal("wrong plan")
		}
	}
}

func TestPlanRefusesAnInterfaceItDidNotMake(t *testing.T) {
	named := func(name string) func(string) string {
		return func(s string) string {
			return strings.Replace(s, "interface:\n", "interface:\n  name: "+name+"\n", 1)
		}
	}
	tests := []struct {
		name, iface string
		host        fakeHost
		want        string
	}{
		{"the egress interface", "eth0", fakeHost{}, "interface.name eth0 is the egress interface"},
		{"an existing veth", "veth1", fakeHost{linkKinds: map[string]string{"veth1": "veth"}}, "existing veth interface"},
		{"another tool's WireGuard", "wg0", fakeHost{linkKinds: map[string]string{"wg0": "wireguard"}}, "wg-quick down wg0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlan(newCluster(t, 2).config(t, 2, 0, named(tt.iface)), tt.host)
			if err := p.Err(); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "fix:") {
				t.Errorf("Err = %v, want %q with a fix", err, tt.want)
			}
		})
	}
}

func TestPlanRefusesAnAddressHeldElsewhere(t *testing.T) {
	c := newCluster(t, 2)
	p := NewPlan(c.config(t, 2, 0, nil), fakeHost{addrs: map[string][]string{"192.168.2.1": {"eth1"}}})
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "192.168.2.1 (nodes[].address of node-0) is already on eth1") ||
		!strings.Contains(err.Error(), "ip addr del 192.168.2.1 dev eth1") {
		t.Errorf("Err = %v", err)
	}
	// On wg0 itself (a reload) it is no problem.
	p = NewPlan(c.config(t, 2, 0, nil), fakeHost{addrs: map[string][]string{"192.168.2.1": {"wg0"}}})
	if err := p.Err(); err != nil {
		t.Errorf("the address on wg0: %v", err)
	}
}

// TestAHomeNodeWithoutEndpoint: a node the file gives no endpoint gets no
// --node-external-ip, is relayed by the master for the others, and check
// says so.
func TestAHomeNodeWithoutEndpoint(t *testing.T) {
	c := newCluster(t, 3)
	noEndpoint := func(s string) string { return strings.Replace(s, "    endpoint: 203.0.113.12:5418\n", "", 1) }
	home := c.plan(t, 3, 2, noEndpoint)
	if slices.Contains(home.K3s.Args, "--node-external-ip") {
		t.Errorf("a node without an endpoint gets --node-external-ip: %v", home.K3s.Args)
	}
	if home.Paths.Self != c.keys[2].PublicKey() || len(home.Paths.Peers) != 2 || !home.Paths.Peers[0].Configured {
		t.Errorf("the home node's paths config = %+v", home.Paths)
	}
	cloud := c.plan(t, 3, 1, noEndpoint)
	want := map[string]bool{"node-0": true, "node-2": false}
	for _, p := range cloud.Paths.Peers {
		if want[p.Name] != p.Configured {
			t.Errorf("cloud's peer %s configured = %v", p.Name, p.Configured)
		}
	}
	master := c.plan(t, 3, 0, noEndpoint)
	for _, tc := range []struct {
		p    *Plan
		want []string
	}{
		{home, []string{"this node has no endpoint", "no --node-external-ip", "relays for nobody", "relays: the nodes with an endpoint", "node-0, node-1", "without an endpoint: node-2"}},
		{master, []string{"this node relays too", "still encrypted, between the file's nodes only"}},
		{cloud, []string{"relayed within about 2 s", "learned from the master and the servers"}},
	} {
		var out bytes.Buffer
		tc.p.Print(&out)
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("check for %s does not say %q:\n%s", tc.p.Config.Self.Name, w, out.String())
			}
		}
	}
	off := c.plan(t, 3, 1, func(s string) string {
		return strings.Replace(noEndpoint(s), "  listen_port: 5418\n", "  listen_port: 5418\n  persistent_keepalive: 0\n", 1)
	})
	if !slices.ContainsFunc(off.Warnings, func(w string) bool { return strings.Contains(w, "node-2 has no endpoint") }) {
		t.Errorf("keepalive 0 with a node without endpoint: warnings %q", off.Warnings)
	}
}
