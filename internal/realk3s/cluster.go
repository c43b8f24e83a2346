//go:build linux

package realk3s

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// Cluster is a real k3s cluster on machines in the simulated clouds, run
// by the appliance.
type Cluster struct {
	t     testnet.T
	Net   *testnet.Net
	Bins  testnet.Binaries
	path  string // PATH inside the nodes
	image []byte
	Nodes []*testnet.Node // the master first
}

// NewCluster prepares a cluster for the k3s binary k3s and the appliance
// binary appliance; binDir is a directory of the caller's for the PATH
// the nodes get.
func NewCluster(t testnet.T, appliance, k3s, binDir string) *Cluster {
	t.Helper()
	tools, err := Find(k3s)
	if err != nil {
		t.Fatalf("a real k3s needs more than is here:\n%v", err)
	}
	if err := tools.BinDir(binDir); err != nil {
		t.Fatal(err)
	}
	image, err := ImageArchive(tools.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{t: t, Net: testnet.New(t), Bins: testnet.Binaries{Appliance: appliance, K3s: k3s, Mode: "userspace"},
		path: binDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", image: image}
}

// Add makes a node on a machine of its own in cloud idx, named name, with
// its image and containerd drop-in in place.
func (c *Cluster) Add(name, role, address string, idx int) *testnet.Node {
	c.t.Helper()
	return c.AddBehind(name, role, address, idx, testnet.OneToOne)
}

// AddBehind is Add on a machine behind a router with the given NAT; a node
// behind a home NAT (Cone, Symmetric) gets no endpoint in the file.
func (c *Cluster) AddBehind(name, role, address string, idx int, nat testnet.NAT) *testnet.Node {
	c.t.Helper()
	n := testnet.NewNode(c.t, c.Net.AddMachineBehind(name, idx, name, nat), c.Bins, name, role, address)
	if nat != testnet.OneToOne {
		n.Endpoint = ""
	}
	n.StopWithin = 2 * time.Minute
	for path, data := range map[string][]byte{ImagesTar: c.image, ContainerdDropIn: []byte(ContainerdConfig)} {
		if err := os.MkdirAll(filepath.Dir(n.Srv.HostPath(path)), 0o755); err != nil {
			c.t.Fatal(err)
		}
		n.Srv.WriteFile(path, data, 0o644)
	}
	c.Nodes = append(c.Nodes, n)
	return n
}

// File is an edit of the cluster file (testnet.ClusterFile) that adds the
// k3s flags of Args.
func (c *Cluster) File(s string) string {
	list := func(args []string) string {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = fmt.Sprintf("%q", a)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return strings.Replace(s, "k3s:\n", "k3s:\n  server_args: "+list(Args(true))+"\n  agent_args: "+list(Args(false))+"\n", 1)
}

// Path is the PATH the nodes get (kubectl among it).
func (c *Cluster) Path() string { return c.path }

// Start starts n's appliance with the nodes' PATH.
func (c *Cluster) Start(n *testnet.Node) {
	c.t.Helper()
	n.StartWith(c.t, "NOTIFY_SOCKET=/nonexistent", "PATH="+c.path)
}

// KubectlArgs is the command that runs kubectl with args on the master
// (for testnet.Server.Start).
func (c *Cluster) KubectlArgs(args ...string) []string {
	return append([]string{"KUBECONFIG=" + Kubeconfig, "PATH=" + c.path, "kubectl"}, args...)
}

// Kubectl runs kubectl on the master.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	return c.KubectlOn(c.Nodes[0], args...)
}

// KubectlOn runs kubectl on a server node n, against its own API server.
func (c *Cluster) KubectlOn(n *testnet.Node, args ...string) (string, error) {
	return n.Srv.Try("env", c.KubectlArgs(args...)...)
}

// MustKubectl is Kubectl that fails on an error.
func (c *Cluster) MustKubectl(args ...string) string {
	c.t.Helper()
	out, err := c.Kubectl(args...)
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

// Ready returns the Ready nodes and their InternalIP.
func (c *Cluster) Ready() map[string]string {
	out, err := c.Kubectl("get", "nodes", "-o", "json")
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

// WaitReady waits until n is Ready and returns its InternalIP.
func (c *Cluster) WaitReady(n *testnet.Node, within time.Duration) string {
	c.t.Helper()
	if !testnet.Eventually(within, func() bool { _, ok := c.Ready()[n.Name]; return ok }) {
		out, _ := c.Kubectl("get", "nodes", "-o", "wide")
		c.t.Fatalf("%s is not Ready after %s:\n%s\nappliance:\n%s", n.Name, within, out, n.Proc.Output())
	}
	return c.Ready()[n.Name]
}

type podList struct {
	Items []struct {
		Metadata struct{ Name string }
		Status   struct{ Phase, PodIP string }
	}
}

// PodIPs returns the Running pods' IPs by name.
func (c *Cluster) PodIPs() map[string]string {
	out, err := c.Kubectl("get", "pods", "-o", "json")
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

// Pod is a busybox pod pinned to node; command is a JSON list.
func Pod(name, node, labels, command string) string {
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
`, name, labels, node, Image, command)
}

// Sleeper is a pod command that waits.
const Sleeper = `["sleep", "100000"]`

// Deploy applies manifests on the master and waits until the pods named
// run; it returns their IPs.
func (c *Cluster) Deploy(manifests string, pods ...string) map[string]string {
	c.t.Helper()
	c.Nodes[0].Srv.WriteFile("/run/wgk3s/manifest.yaml", []byte(manifests), 0o644)
	c.MustKubectl("apply", "-f", "/run/wgk3s/manifest.yaml")
	var ips map[string]string
	if !testnet.Eventually(5*time.Minute, func() bool {
		ips = c.PodIPs()
		for _, p := range pods {
			if ips[p] == "" {
				return false
			}
		}
		return true
	}) {
		out, _ := c.Kubectl("get", "pods", "-o", "wide")
		desc, _ := c.Kubectl("describe", "pods")
		c.t.Fatalf("pods not running:\n%s\n%s", out, desc)
	}
	return ips
}
