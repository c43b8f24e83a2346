//go:build linux

// Package realk3s runs the appliance with a real k3s in the simulated
// clouds: `WGK3S_K3S_BINARY=/path/to/k3s make real-test`. Each node is a
// machine of its own (internal/testnet: its own mount, pid, UTS and cgroup
// namespaces, so k3s, containerd and the pods never touch the host).
// Without WGK3S_K3S_BINARY the tests skip and say so; `make test` does not
// run them (CI has no k3s).
package realk3s

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/realk3s"
	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

var applianceBin string

func TestMain(m *testing.M) {
	if os.Getuid() != 0 || os.Getenv("WGK3S_K3S_BINARY") == "" {
		os.Exit(m.Run()) // every test skips with the reason
	}
	dir, err := os.MkdirTemp("", "wgk3s-real-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	applianceBin = filepath.Join(dir, "appliance")
	build := exec.Command("go", "build", "-o", applianceBin, "github.com/wgk3s/wgk3s/cmd/appliance")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the appliance:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is a real k3s cluster on machines in the simulated clouds.
type cluster struct {
	*realk3s.Cluster
	t *testing.T
}

func newCluster(t *testing.T) *cluster {
	k3s := os.Getenv("WGK3S_K3S_BINARY")
	if k3s == "" {
		t.Skip("set WGK3S_K3S_BINARY to a k3s binary to run a real k3s (make real-test; README: \"A real k3s\")")
	}
	testnet.Requirements(t, "wg", "unshare", "nsenter", "iptables")
	return &cluster{Cluster: realk3s.NewCluster(t, applianceBin, k3s, filepath.Join(t.TempDir(), "bin")), t: t}
}

// waitReady waits until n is Ready, and checks its InternalIP.
func (c *cluster) waitReady(n *testnet.Node, within time.Duration) {
	c.t.Helper()
	if ip := c.WaitReady(n, within); ip != n.Address {
		c.t.Errorf("%s registered with INTERNAL-IP %s, want its wg address %s", n.Name, ip, n.Address)
	}
}

// peerPath is how n reaches the peer named peer, from its status:
// "direct" or "relayed via NAME".
func peerPath(t *testing.T, n *testnet.Node, peer string) string {
	t.Helper()
	out := n.Srv.Run(applianceBin, "status", "--json")
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s: status --json: %v\n%s", n.Name, err, out)
	}
	path, _ := r.PathTo(peer)
	return path
}

var rttRE = regexp.MustCompile(`round-trip min/avg/max = [\d.]+/([\d.]+)/`)

// counters adds, on every node, rules that count what leaves by wg0 as
// flannel's VXLAN and what leaves by eth0 for the pod network or as VXLAN,
// and returns a function that reads them.
func counters(nodes []*testnet.Node) func(n *testnet.Node) (wg0, clear int) {
	rules := [][]string{
		{"-o", "wg0", "-p", "udp", "--dport", "8472", "-m", "comment", "--comment", "count-wg0-vxlan"},
		{"-o", "eth0", "-d", "10.42.0.0/16", "-m", "comment", "--comment", "count-eth0-pods"},
		{"-o", "eth0", "-p", "udp", "--dport", "8472", "-m", "comment", "--comment", "count-eth0-vxlan"},
	}
	for _, n := range nodes {
		for _, r := range rules {
			n.Srv.Run("iptables", append([]string{"-t", "mangle", "-I", "POSTROUTING"}, r...)...)
		}
	}
	return func(n *testnet.Node) (wg0, clear int) {
		out := n.Srv.Run("iptables", "-t", "mangle", "-L", "POSTROUTING", "-v", "-n", "-x")
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			var pk int
			fmt.Sscan(f[0], &pk)
			switch {
			case strings.Contains(l, "count-wg0-vxlan"):
				wg0 += pk
			case strings.Contains(l, "count-eth0"):
				clear += pk
			}
		}
		return wg0, clear
	}
}

// TestRealCluster: the master and two agents, each on a machine in its own
// cloud behind NAT, running the real appliance (userspace WireGuard) and a
// real k3s. Agents register with their wg addresses and become Ready;
// flannel's VXLAN runs over wg0; pods on every node ping each other through
// wg0 and nothing leaves eth0 in the clear; a ClusterIP Service answers a
// pod on another node; a node added by a SIGHUP on the master joins while
// pods ping each other with no loss (that node is at home, behind a
// symmetric NAT, with no endpoint); its pods ping the others' directly and,
// when the direct path is blocked, through the master; SIGTERM stops
// everything.
func TestRealCluster(t *testing.T) {
	c := newCluster(t)
	m := c.Add("k3s-master", "master", "192.168.2.1", 1)
	n1 := c.Add("k3s-node-1", "agent", "192.168.2.2", 2)
	n2 := c.Add("k3s-node-2", "agent", "192.168.2.3", 3)
	// node-3 is at home: behind a symmetric NAT, with no endpoint.
	n3 := c.AddBehind("k3s-node-3", "agent", "192.168.2.4", 4, testnet.Symmetric)
	first := []*testnet.Node{m, n1, n2}
	for _, n := range first {
		n.WriteConfig(first, c.File)
	}
	began := time.Now()
	c.Start(m)
	for _, n := range first[1:] {
		c.Start(n)
	}

	t.Run("every node registers with its wg address and becomes Ready", func(t *testing.T) {
		for _, n := range first {
			c.waitReady(n, 10*time.Minute)
			t.Logf("timing: %s Ready %s after the appliances started", n.Name, time.Since(began).Round(time.Second))
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("flannel.1 is a VXLAN over wg0 on every node", func(t *testing.T) {
		for _, n := range first {
			var out string
			testnet.Eventually(2*time.Minute, func() bool { // flannel makes it once its node is registered
				out, _ = n.Srv.Try("ip", "-d", "link", "show", "flannel.1")
				return strings.Contains(out, "vxlan")
			})
			if !strings.Contains(out, "vxlan id 1") || !strings.Contains(out, "dev wg0") {
				t.Errorf("%s: flannel.1 is not a VXLAN over wg0:\n%s", n.Name, out)
			}
		}
	})

	var manifests strings.Builder
	for _, n := range first {
		manifests.WriteString(realk3s.Pod("pod-"+n.Name, n.Name, "app: pinger", realk3s.Sleeper))
	}
	manifests.WriteString(realk3s.Pod("web", n1.Name, "app: web", `["httpd", "-f", "-p", "8080", "-h", "/www"]`))
	manifests.WriteString(`apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
`)
	ips := c.Deploy(manifests.String(), "pod-k3s-master", "pod-k3s-node-1", "pod-k3s-node-2", "web")
	read := counters(first)

	t.Run("pods on every node ping each other through wg0, none in the clear", func(t *testing.T) {
		var rtts []string
		for _, a := range first {
			for _, b := range first {
				if a == b {
					continue
				}
				out, err := c.Kubectl("exec", "pod-"+a.Name, "--", "ping", "-c", "5", "-W", "2", ips["pod-"+b.Name])
				if err != nil || !strings.Contains(out, "5 packets received") {
					t.Errorf("pod on %s -> pod on %s (%s): %v\n%s", a.Name, b.Name, ips["pod-"+b.Name], err, out)
					continue
				}
				if m := rttRE.FindStringSubmatch(out); m != nil {
					rtts = append(rtts, fmt.Sprintf("%s->%s %s ms", a.Name, b.Name, m[1]))
				}
			}
		}
		t.Logf("timing: pod-to-pod RTT (avg of 5): %s", strings.Join(rtts, ", "))
		for _, n := range first {
			wg0, clear := read(n)
			if wg0 == 0 || clear != 0 {
				t.Errorf("%s: %d VXLAN packets out by wg0, %d pod or VXLAN packets out by eth0 in the clear", n.Name, wg0, clear)
			}
		}
	})

	t.Run("a ClusterIP Service answers a pod on another node", func(t *testing.T) {
		ip := strings.TrimSpace(c.MustKubectl("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
		var out string
		// busybox's nc: its static wget crashes on some addresses.
		get := fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 80`, ip)
		if !testnet.Eventually(60*time.Second, func() bool {
			out, _ = c.Kubectl("exec", "pod-k3s-node-2", "--", "sh", "-c", get)
			return strings.Contains(out, "wgk3s ok")
		}) {
			t.Errorf("the Service %s (web on node-1) does not answer a pod on node-2: %s", ip, out)
		}
	})

	t.Run("a node added by a SIGHUP joins while pods ping: 0 lost", func(t *testing.T) {
		all := []*testnet.Node{m, n1, n2, n3}
		flow := m.Srv.Start("env", c.KubectlArgs("exec", "pod-k3s-master", "--", "ping", "-c", "150", "-i", "0.2", "-W", "2", ips["pod-k3s-node-1"])...)
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 5 }) {
			t.Fatalf("no flow:\n%s", flow.Output())
		}
		m.WriteConfig(all, c.File)
		m.Reload(t, "msg=reloaded")
		os.Remove(n3.Srv.HostPath(testnet.AgentTokenPath))
		master, _ := os.ReadFile(m.Srv.HostPath(testnet.ConfigPath))
		n3.Srv.WriteFile(testnet.ConfigPath, master, 0o644)
		added := time.Now()
		c.Start(n3)
		c.waitReady(n3, 10*time.Minute)
		t.Logf("timing: %s Ready %s after its appliance started", n3.Name, time.Since(added).Round(time.Second))
		if exited, err := flow.Wait(2 * time.Minute); !exited || err != nil {
			t.Errorf("the ping flow: exited %v, %v", exited, err)
		}
		if !strings.Contains(flow.Output(), " 0% packet loss") {
			t.Errorf("pods lost packets while node-3 was added:\n%s", flow.Output())
		}
	})

	t.Run("the home node's pods ping the cloud nodes' pods, directly and through the relay", func(t *testing.T) {
		c.Deploy(realk3s.Pod("pod-k3s-node-3", n3.Name, "app: pinger", realk3s.Sleeper), "pod-k3s-node-3")
		podPing := func(to string) string {
			out, err := c.Kubectl("exec", "pod-k3s-node-3", "--", "ping", "-c", "5", "-W", "2", ips[to])
			if err != nil || !strings.Contains(out, "5 packets received") {
				t.Errorf("pod on the home node -> %s (%s): %v\n%s", to, ips[to], err, out)
				return ""
			}
			if m := rttRE.FindStringSubmatch(out); m != nil {
				return m[1] + " ms"
			}
			return "?"
		}
		for _, to := range []string{"pod-k3s-master", "pod-k3s-node-1", "pod-k3s-node-2"} {
			t.Logf("timing: pod on the home node -> %s directly: RTT %s", to, podPing(to))
		}
		if p := peerPath(t, n2, n3.Name); p != "direct" {
			t.Errorf("node-2 reaches the home node %q, want direct (its NAT lets a reply to its own packets in)", p)
		}
		// The home router drops everything to and from node-2: that pair
		// falls back to a relay.
		block := func(op string) {
			for _, dir := range []string{"-d", "-s"} {
				n3.Srv.RunRouter("iptables", "-w", op, "FORWARD", dir, n2.Srv.PublicIP.String(), "-j", "DROP")
			}
		}
		block("-I")
		defer block("-D")
		blocked := time.Now()
		var p string
		if !testnet.Eventually(2*time.Minute, func() bool { p = peerPath(t, n2, n3.Name); return strings.HasPrefix(p, "relayed via ") }) {
			t.Fatalf("node-2 reaches the home node %q 2 minutes after the direct path was blocked", p)
		}
		// Both ends take the same relay (the lower key of the pair chooses);
		// it is a node with an endpoint: the master or node-1.
		if !testnet.Eventually(30*time.Second, func() bool { return peerPath(t, n3, n2.Name) == p }) {
			t.Fatalf("the home node reaches node-2 %q, node-2 it %q", peerPath(t, n3, n2.Name), p)
		}
		if p != "relayed via k3s-master" && p != "relayed via k3s-node-1" {
			t.Errorf("relayed through %q, want a node with an endpoint", p)
		}
		t.Logf("timing: relayed %s after the direct path was blocked (keepalive 25 s)", time.Since(blocked).Round(time.Second))
		t.Logf("timing: pod on the home node -> pod-k3s-node-2 %s: RTT %s", p, podPing("pod-k3s-node-2"))
	})

	t.Run("SIGTERM stops the appliance, k3s and wg0; cleanup --all leaves nothing", func(t *testing.T) {
		procs := func(n *testnet.Node) string {
			return n.Srv.Run("sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done")
		}
		for _, n := range []*testnet.Node{n3, n2, n1, m} {
			n.Stop(t)
			if _, err := n.Srv.Try("ip", "link", "show", "wg0"); err == nil {
				t.Errorf("%s: wg0 is left", n.Name)
			}
			if save := n.Srv.Run("iptables-save"); strings.Contains(save, "WGK3S") {
				t.Errorf("%s: the appliance's rules are left", n.Name)
			}
			if p := procs(n); strings.Contains(p, "k3s server") || strings.Contains(p, "k3s agent") {
				t.Errorf("%s: k3s still runs:\n%s", n.Name, p)
			}
		}
		// As with k3s's own service, a stop keeps the pods running (a restart
		// does not restart them); a node that stops for good is cleaned up.
		for _, n := range []*testnet.Node{n3, n2, n1, m} {
			out, err := n.Srv.Try(applianceBin, "cleanup", "--all", "--config", testnet.ConfigPath)
			if err != nil {
				t.Errorf("%s: cleanup --all: %v\n%s", n.Name, err, out)
			}
			if p := procs(n); strings.Contains(p, "containerd-shim") || strings.Contains(p, "sleep 100000") || strings.Contains(p, "httpd") {
				t.Errorf("%s: pods are left after cleanup --all:\n%s", n.Name, p)
			}
			mounts := n.Srv.Run("cat", "/proc/self/mountinfo")
			for _, prefix := range []string{"/run/k3s/", "/var/lib/kubelet/pods/", "/run/netns/cni-"} {
				if strings.Contains(mounts, " "+prefix) {
					t.Errorf("%s: mounts under %s are left:\n%s", n.Name, prefix, mounts)
				}
			}
			if links := n.Srv.Run("ip", "-br", "link"); strings.Contains(links, "cni0") || strings.Contains(links, "flannel.1") || strings.Contains(links, "veth") {
				t.Errorf("%s: k3s's interfaces are left:\n%s", n.Name, links)
			}
			if routes := n.Srv.Run("ip", "route", "show", "type", "blackhole"); routes != "" {
				t.Errorf("%s: fail-closed routes are left after cleanup --all:\n%s", n.Name, routes)
			}
		}
	})
}

// TestUpgradeToTheAgentToken: a cluster set up by an appliance from before
// the two tokens (every node holds the server token in k3s.token_file)
// moves to the agent token as the README says: the master first, then the
// agents, and the agents stay Ready throughout. The earlier appliance is
// built from the commit $WGK3S_OLD_APPLIANCE_COMMIT (default: the last
// before the two tokens).
func TestUpgradeToTheAgentToken(t *testing.T) {
	c := newCluster(t)
	commit := os.Getenv("WGK3S_OLD_APPLIANCE_COMMIT")
	if commit == "" {
		commit = "6ae582ba5772ef385a53002625065114ae651856"
	}
	old := filepath.Join(t.TempDir(), "appliance-old")
	src := filepath.Join(t.TempDir(), "src")
	for _, args := range [][]string{{"git", "worktree", "add", "--detach", src, commit}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Skipf("cannot check out the earlier appliance (%s): %v\n%s", commit, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("git", "worktree", "remove", "--force", src).Run() })
	build := exec.Command("go", "build", "-o", old, "./cmd/appliance")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the earlier appliance: %v\n%s", err, out)
	}
	m := c.Add("k3s-master", "master", "192.168.2.1", 1)
	n1 := c.Add("k3s-node-1", "agent", "192.168.2.2", 2)
	nodes := []*testnet.Node{m, n1}
	// The earlier layout: the server token on every node, no agent token.
	token, _ := os.ReadFile(m.Srv.HostPath(testnet.TokenPath))
	for _, n := range nodes {
		n.Srv.WriteFile(testnet.TokenPath, token, 0o600)
		os.Remove(n.Srv.HostPath(testnet.AgentTokenPath))
	}
	earlier := func(s string) string {
		s = strings.Replace(c.File(s), "  agent_token_file: "+testnet.AgentTokenPath+"\n", "", 1)
		// The earlier appliance knows no snapshots section (unknown keys
		// are errors); testnet's file has one.
		return strings.Replace(s, "snapshots:\n  dir: "+testnet.SnapshotDir+"\n", "", 1)
	}
	for _, n := range nodes {
		n.Bin.Appliance = old
		n.WriteConfig(nodes, earlier)
		c.Start(n)
	}
	for _, n := range nodes {
		c.WaitReady(n, 10*time.Minute)
	}
	// The master is upgraded: its k3s restarts with --agent-token-file.
	m.Stop(t)
	m.Bin.Appliance = applianceBin
	for _, n := range nodes {
		n.WriteConfig(nodes, c.File)
	}
	c.Start(m)
	c.WaitReady(m, 5*time.Minute)
	if _, err := os.Stat(m.Srv.HostPath(testnet.AgentTokenPath)); err != nil {
		t.Fatalf("the upgraded master made no agent token: %v", err)
	}
	// The agent, still on the earlier appliance and the server token, stays
	// Ready for a while (its k3s keeps its connection).
	time.Sleep(45 * time.Second) // a window in which a broken agent would turn NotReady (the node monitor grace period is 40 s)
	if _, ok := c.Ready()[n1.Name]; !ok {
		out, _ := c.Kubectl("get", "nodes", "-o", "wide")
		t.Errorf("node-1 is not Ready 45 s after the master moved to the agent token, before its own upgrade:\n%s", out)
	}
	// Its k3s restarts meanwhile (a crash, a reboot): does the server token still join it?
	pidOut := n1.Srv.Run("sh", "-c", "for p in /proc/[0-9]*; do if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^[^ ]*k3s agent'; then basename $p; fi; done")
	if pid := strings.TrimSpace(pidOut); pid != "" {
		n1.Srv.Run("kill", "-9", strings.Fields(pid)[0])
		joined := testnet.Eventually(2*time.Minute, func() bool {
			return strings.Count(n1.Proc.Output(), "k3s started") >= 2 && strings.Contains(n1.Proc.Output(), "Connecting to proxy")
		})
		_, ready := c.Ready()[n1.Name]
		t.Logf("an agent still on the server token, its k3s restarted after the master moved: rejoined %v, Ready %v\n%s", joined, ready,
			lastLines(n1.Proc.Output(), "level=error", 5))
	}
	// The agent is upgraded: it fetches the agent token and restarts k3s with it.
	n1.Stop(t)
	n1.Bin.Appliance = applianceBin
	c.Start(n1)
	if !n1.Proc.WaitOutput("sync: token written", 2*time.Minute) {
		t.Fatalf("the upgraded agent did not fetch the agent token:\n%s", n1.Proc.Output())
	}
	c.WaitReady(n1, 5*time.Minute)
	if !strings.Contains(n1.Proc.Output(), "this agent holds "+testnet.TokenPath) {
		t.Errorf("the upgraded agent does not warn about the server token it still holds:\n%s", n1.Proc.Output())
	}
}

// lastLines returns the last n lines of out that contain s.
func lastLines(out, s string, n int) string {
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			got = append(got, l)
		}
	}
	return strings.Join(got[max(0, len(got)-n):], "\n")
}
