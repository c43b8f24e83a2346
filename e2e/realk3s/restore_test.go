//go:build linux

package realk3s

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/realk3s"
	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

// objects are the Kubernetes objects a lone master's datastore must keep.
const objects = `apiVersion: v1
kind: Namespace
metadata:
  name: keep
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  namespace: keep
data:
  colour: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
  namespace: keep
stringData:
  password: s3cret-in-etcd
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: keep
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: %s
        imagePullPolicy: Never
        command: ["sleep", "100000"]
---
`

// keptSince reports whether n keeps a snapshot taken after since.
func keptSince(n *testnet.Node, since time.Time) bool {
	var r status.Report
	out, err := n.Srv.Try(applianceBin, "status", "--json")
	return err == nil && json.Unmarshal([]byte(out), &r) == nil && r.Snapshots != nil && r.Snapshots.Last != nil && r.Snapshots.Last.Taken.After(since)
}

// TestLoneMasterRestored: one master on SQLite, two agents. Objects are
// made, a snapshot reaches the agents, the master's machine is destroyed
// (processes killed, disks deleted); on a new machine with another public
// address, given the cluster file, the master's key and the server token,
// `appliance restore` and a start bring the cluster back: every object is
// there, the agents are Ready without being touched, and the pods answer
// across nodes.
func TestLoneMasterRestored(t *testing.T) {
	c := newCluster(t)
	m := c.Add("k3s-master", "master", "192.168.2.1", 1)
	a1 := c.Add("k3s-node-1", "agent", "192.168.2.2", 2)
	a2 := c.Add("k3s-node-2", "agent", "192.168.2.3", 3)
	all := []*testnet.Node{m, a1, a2}
	file := func(s string) string {
		return strings.Replace(c.File(s), "  dir: "+testnet.SnapshotDir+"\n", "  dir: "+testnet.SnapshotDir+"\n  interval: 20s\n", 1)
	}
	for _, n := range all {
		if n != m {
			os.Remove(n.Srv.HostPath(testnet.AgentTokenPath))
		}
		n.WriteConfig(all, file)
	}
	for _, n := range all {
		c.Start(n)
	}
	for _, n := range all {
		c.waitReady(n, 10*time.Minute)
	}
	var manifests strings.Builder
	fmt.Fprintf(&manifests, objects, realk3s.Image)
	for _, n := range []*testnet.Node{a1, a2} {
		manifests.WriteString(realk3s.Pod("pod-"+n.Name, n.Name, "app: pinger", realk3s.Sleeper))
	}
	made := time.Now()
	ips := c.Deploy(manifests.String(), "pod-k3s-node-1", "pod-k3s-node-2")
	for _, a := range []*testnet.Node{a1, a2} {
		if !testnet.Eventually(2*time.Minute, func() bool { return keptSince(a, made) }) {
			t.Fatalf("%s keeps no snapshot taken after the objects were made:\n%s", a.Name, a.Srv.Run(applianceBin, "status"))
		}
	}
	t.Logf("the master said:\n%s", lastLines(m.Srv.Run(applianceBin, "status"), "snapshots", 2))

	m.Srv.Destroy()
	t.Log("the master's machine is destroyed")
	nm := c.Add("k3s-master", "master", "192.168.2.1", 4) // a new machine, another public address
	nm.Key = m.Key
	nm.Srv.WriteFile(testnet.KeyPath, []byte(m.Key.String()+"\n"), 0o600)
	nm.Srv.WriteFile(testnet.TokenPath, []byte(testnet.Token+"\n"), 0o600)
	os.Remove(nm.Srv.HostPath(testnet.AgentTokenPath)) // it comes back with the datastore
	kept, err := os.ReadFile(a1.Srv.HostPath(testnet.ConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	nm.Srv.WriteFile(testnet.ConfigPath, kept, 0o644)
	c.Nodes = []*testnet.Node{nm, a1, a2} // kubectl asks the new master

	if out, err := nm.Srv.Try(applianceBin, "restore", "--config", testnet.ConfigPath); err != nil || !strings.Contains(out, "systemctl start wgk3s") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	began := time.Now()
	c.Start(nm)
	var werr error
	if !testnet.Eventually(5*time.Minute, func() bool {
		_, werr = c.Kubectl("--request-timeout=5s", "create", "configmap", "after-the-restore")
		return werr == nil
	}) {
		t.Fatalf("the restored API does not take a write: %v\n%s", werr, lastLines(nm.Proc.Output(), "", 30))
	}
	t.Logf("timing: the restored API took a write %.1f s after the new machine's appliance started", time.Since(began).Seconds())

	t.Run("every object is there", func(t *testing.T) {
		if out := c.MustKubectl("-n", "keep", "get", "configmap", "app-config", "-o", "jsonpath={.data.colour}"); out != "blue" {
			t.Errorf("configmap: %q", out)
		}
		if out := c.MustKubectl("-n", "keep", "get", "secret", "app-secret", "-o", "jsonpath={.data.password}"); out != "czNjcmV0LWluLWV0Y2Q=" {
			t.Errorf("secret: %q", out)
		}
		if !testnet.Eventually(3*time.Minute, func() bool {
			out, _ := c.Kubectl("-n", "keep", "get", "deployment", "web", "-o", "jsonpath={.status.availableReplicas}")
			return out == "1"
		}) {
			out, _ := c.Kubectl("-n", "keep", "get", "deployment,pods", "-o", "wide")
			t.Errorf("the deployment is not available:\n%s", out)
		}
	})

	t.Run("the agents are Ready untouched and their pods answer across nodes", func(t *testing.T) {
		for _, n := range []*testnet.Node{a1, a2, nm} {
			c.waitReady(n, 5*time.Minute)
		}
		var out string
		if !testnet.Eventually(2*time.Minute, func() bool {
			out, _ = c.Kubectl("exec", "pod-k3s-node-1", "--", "ping", "-c", "3", "-W", "2", ips["pod-k3s-node-2"])
			return testnet.Received(out) == 3
		}) {
			t.Errorf("pod on node-1 -> pod on node-2 after the restore:\n%s", out)
		}
	})
	t.Logf("timing: everything checked %.1f s after the new machine's appliance started", time.Since(began).Seconds())
	for _, n := range []*testnet.Node{a1, a2, nm} {
		n.Stop(t)
	}
}
