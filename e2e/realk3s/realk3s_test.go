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
	t     *testing.T
	net   *testnet.Net
	bins  testnet.Binaries
	path  string // PATH inside the nodes
	image []byte
	nodes []*testnet.Node
}

func newCluster(t *testing.T) *cluster {
	k3s := os.Getenv("WGK3S_K3S_BINARY")
	if k3s == "" {
		t.Skip("set WGK3S_K3S_BINARY to a k3s binary to run a real k3s (make real-test; README: \"A real k3s\")")
	}
	testnet.Requirements(t, "wg", "unshare", "nsenter", "iptables")
	tools, err := realk3s.Find(k3s)
	if err != nil {
		t.Fatalf("WGK3S_K3S_BINARY is set, but what a real k3s needs here is not all there:\n%v", err)
	}
	bin := filepath.Join(t.TempDir(), "bin")
	if err := tools.BinDir(bin); err != nil {
		t.Fatal(err)
	}
	image, err := realk3s.ImageArchive(tools.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, net: testnet.New(t), bins: testnet.Binaries{Appliance: applianceBin, K3s: k3s, Mode: "userspace"},
		path: bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", image: image}
}

// add makes a node on a machine of its own in cloud idx.
func (c *cluster) add(name, role, address string, idx int) *testnet.Node {
	c.t.Helper()
	n := testnet.NewNode(c.t, c.net.AddMachine(name, idx, name), c.bins, name, role, address)
	n.StopWithin = 2 * time.Minute
	for path, data := range map[string][]byte{realk3s.ImagesTar: c.image, realk3s.ContainerdDropIn: []byte(realk3s.ContainerdConfig)} {
		if err := os.MkdirAll(filepath.Dir(n.Srv.HostPath(path)), 0o755); err != nil {
			c.t.Fatal(err)
		}
		n.Srv.WriteFile(path, data, 0o644)
	}
	c.nodes = append(c.nodes, n)
	return n
}

// file edits the cluster file with the tests' k3s flags.
func (c *cluster) file(s string) string {
	list := func(args []string) string {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = fmt.Sprintf("%q", a)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return strings.Replace(s, "k3s:\n", "k3s:\n  server_args: "+list(realk3s.Args(true))+"\n  agent_args: "+list(realk3s.Args(false))+"\n", 1)
}

func (c *cluster) start(n *testnet.Node) {
	c.t.Helper()
	n.StartWith(c.t, "NOTIFY_SOCKET=/nonexistent", "PATH="+c.path)
}

// kubectl runs kubectl on the master.
func (c *cluster) kubectl(args ...string) (string, error) {
	return c.nodes[0].Srv.Try("env", append([]string{"KUBECONFIG=" + realk3s.Kubeconfig, "PATH=" + c.path, "kubectl"}, args...)...)
}

func (c *cluster) mustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		c.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type nodeList struct {
	Items []struct {
		Metadata struct{ Name string }
		Status   struct {
			Addresses  []struct{ Type, Address string }
			Conditions []struct{ Type, Status string }
		}
	}
}

// ready returns the Ready nodes and their InternalIP.
func (c *cluster) ready() map[string]string {
	out, err := c.kubectl("get", "nodes", "-o", "json")
	if err != nil {
		return nil
	}
	var l nodeList
	if json.Unmarshal([]byte(out), &l) != nil {
		return nil
	}
	got := map[string]string{}
	for _, n := range l.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				for _, a := range n.Status.Addresses {
					if a.Type == "InternalIP" {
						got[n.Metadata.Name] = a.Address
					}
				}
			}
		}
	}
	return got
}

// waitReady waits until node is Ready, and checks its InternalIP.
func (c *cluster) waitReady(n *testnet.Node, within time.Duration) {
	c.t.Helper()
	if !testnet.Eventually(within, func() bool { _, ok := c.ready()[n.Name]; return ok }) {
		out, _ := c.kubectl("get", "nodes", "-o", "wide")
		c.t.Fatalf("%s is not Ready after %s:\n%s\nappliance:\n%s", n.Name, within, out, n.Proc.Output())
	}
	if ip := c.ready()[n.Name]; ip != n.Address {
		c.t.Errorf("%s registered with INTERNAL-IP %s, want its wg address %s", n.Name, ip, n.Address)
	}
}

type podList struct {
	Items []struct {
		Metadata struct{ Name string }
		Spec     struct{ NodeName string }
		Status   struct{ Phase, PodIP string }
	}
}

// podIPs returns the Running pods' IPs by name.
func (c *cluster) podIPs() map[string]string {
	out, err := c.kubectl("get", "pods", "-o", "json")
	if err != nil {
		return nil
	}
	var l podList
	if json.Unmarshal([]byte(out), &l) != nil {
		return nil
	}
	ips := map[string]string{}
	for _, p := range l.Items {
		if p.Status.Phase == "Running" && p.Status.PodIP != "" {
			ips[p.Metadata.Name] = p.Status.PodIP
		}
	}
	return ips
}

// pod is a busybox pod pinned to node.
func pod(name, node string, labels, command string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels: {%s}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: %s
    imagePullPolicy: Never
    command: %s
---
`, name, labels, node, realk3s.Image, command)
}

const sleeper = `["sleep", "100000"]`

// deploy applies manifests on the master and waits until the pods named
// run.
func (c *cluster) deploy(manifests string, pods ...string) map[string]string {
	c.t.Helper()
	c.nodes[0].Srv.WriteFile("/run/wgk3s/manifest.yaml", []byte(manifests), 0o644)
	c.mustKubectl("apply", "-f", "/run/wgk3s/manifest.yaml")
	var ips map[string]string
	if !testnet.Eventually(5*time.Minute, func() bool {
		ips = c.podIPs()
		for _, p := range pods {
			if ips[p] == "" {
				return false
			}
		}
		return true
	}) {
		out, _ := c.kubectl("get", "pods", "-o", "wide")
		desc, _ := c.kubectl("describe", "pods")
		c.t.Fatalf("pods not running:\n%s\n%s", out, desc)
	}
	return ips
}

var rttRE = regexp.MustCompile(`round-trip min/avg/max = [\d.]+/([\d.]+)/`)

// counters adds, on every node, rules that count what leaves by wg0 as
// flannel's VXLAN and what leaves by eth0 for the pod network or as VXLAN,
// and returns a function that reads them.
func (c *cluster) counters(nodes []*testnet.Node) func(n *testnet.Node) (wg0, clear int) {
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
// pods ping each other with no loss; SIGTERM stops everything.
func TestRealCluster(t *testing.T) {
	c := newCluster(t)
	m := c.add("k3s-master", "master", "192.168.2.1", 1)
	n1 := c.add("k3s-node-1", "agent", "192.168.2.2", 2)
	n2 := c.add("k3s-node-2", "agent", "192.168.2.3", 3)
	n3 := c.add("k3s-node-3", "agent", "192.168.2.4", 4)
	first := []*testnet.Node{m, n1, n2}
	for _, n := range first {
		n.WriteConfig(first, c.file)
	}
	began := time.Now()
	c.start(m)
	for _, n := range first[1:] {
		c.start(n)
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
		manifests.WriteString(pod("pod-"+n.Name, n.Name, "app: pinger", sleeper))
	}
	manifests.WriteString(pod("web", n1.Name, "app: web", `["httpd", "-f", "-p", "8080", "-h", "/www"]`))
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
	ips := c.deploy(manifests.String(), "pod-k3s-master", "pod-k3s-node-1", "pod-k3s-node-2", "web")
	read := c.counters(first)

	t.Run("pods on every node ping each other through wg0, none in the clear", func(t *testing.T) {
		var rtts []string
		for _, a := range first {
			for _, b := range first {
				if a == b {
					continue
				}
				out, err := c.kubectl("exec", "pod-"+a.Name, "--", "ping", "-c", "5", "-W", "2", ips["pod-"+b.Name])
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
		ip := strings.TrimSpace(c.mustKubectl("get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
		var out string
		// busybox's nc: its static wget crashes on some addresses.
		get := fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 80`, ip)
		if !testnet.Eventually(60*time.Second, func() bool {
			out, _ = c.kubectl("exec", "pod-k3s-node-2", "--", "sh", "-c", get)
			return strings.Contains(out, "wgk3s ok")
		}) {
			t.Errorf("the Service %s (web on node-1) does not answer a pod on node-2: %s", ip, out)
		}
	})

	t.Run("a node added by a SIGHUP joins while pods ping: 0 lost", func(t *testing.T) {
		all := []*testnet.Node{m, n1, n2, n3}
		flow := m.Srv.Start("env", "KUBECONFIG="+realk3s.Kubeconfig, "PATH="+c.path, "kubectl", "exec", "pod-k3s-master", "--",
			"ping", "-c", "150", "-i", "0.2", "-W", "2", ips["pod-k3s-node-1"])
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 5 }) {
			t.Fatalf("no flow:\n%s", flow.Output())
		}
		m.WriteConfig(all, c.file)
		m.Reload(t, "msg=reloaded")
		os.Remove(n3.Srv.HostPath(testnet.AgentTokenPath))
		master, _ := os.ReadFile(m.Srv.HostPath(testnet.ConfigPath))
		n3.Srv.WriteFile(testnet.ConfigPath, master, 0o644)
		added := time.Now()
		c.start(n3)
		c.waitReady(n3, 10*time.Minute)
		t.Logf("timing: %s Ready %s after its appliance started", n3.Name, time.Since(added).Round(time.Second))
		if exited, err := flow.Wait(2 * time.Minute); !exited || err != nil {
			t.Errorf("the ping flow: exited %v, %v", exited, err)
		}
		if !strings.Contains(flow.Output(), " 0% packet loss") {
			t.Errorf("pods lost packets while node-3 was added:\n%s", flow.Output())
		}
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
