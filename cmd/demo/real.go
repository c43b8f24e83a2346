//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/realk3s"
	"github.com/wgk3s/wgk3s/internal/testnet"
)

// realStory is the demo with a real k3s ($WGK3S_K3S_BINARY): each server
// is a machine of its own (internal/testnet), and the cluster is
// Kubernetes: nodes Ready with their wg addresses, pods that ping each
// other across clouds through wg0.
func (d *demo) realStory(appliance, k3s string) {
	fmt.Printf("Using the real k3s at %s (WGK3S_K3S_BINARY); each server is a machine of its own\n"+
		"(mount, pid, UTS and cgroup namespaces), so k3s and its pods touch nothing on this host.\n", k3s)
	bin, err := os.MkdirTemp("", "wgk3s-demo-bin-")
	if err != nil {
		d.Fatal(err)
	}
	d.Cleanup(func() { os.RemoveAll(bin) })

	d.step("Building a small internet from network namespaces, with a machine in each cloud")
	c := realk3s.NewCluster(&d.Script, appliance, k3s, filepath.Join(bin, "bin"))
	d.net = c.Net
	clouds := []struct{ cloud, name, role, addr string }{
		{"Tencent Cloud", "k3s-master", "master", "192.168.2.1"},
		{"Alibaba Cloud", "k3s-node-1", "agent", "192.168.2.2"},
		{"a third cloud", "k3s-node-2", "agent", "192.168.2.3"},
	}
	fmt.Printf("   %-14s %-11s %-16s %-12s %s\n", "CLOUD", "NODE", "PUBLIC (router)", "PRIVATE eth0", "WG ADDRESS")
	for i, cl := range clouds {
		n := c.Add(cl.name, cl.role, cl.addr, i+1)
		fmt.Printf("   %-14s %-11s %-16s %-12s %s\n", cl.cloud, cl.name, n.Srv.PublicIP, n.Srv.PrivateIP, cl.addr)
	}
	m, n1, n2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	first := c.Nodes[:2]

	d.step("One cluster file, identical on every node")
	fmt.Println(indent(testnet.ClusterFile(first, c.Bins, c.File)))
	for _, n := range first {
		n.WriteConfig(first, c.File)
	}

	d.step("Starting the appliance on the master and node-1, as systemd does; k3s comes up over wg0")
	began := time.Now()
	for _, n := range first {
		c.Start(n)
	}
	for _, n := range first {
		c.WaitReady(n, 10*time.Minute)
	}
	fmt.Printf("   both Ready %s after the appliances started\n", time.Since(began).Round(time.Second))
	fmt.Println(indent(c.MustKubectl("get", "nodes", "-o", "wide")))

	d.step("Adding node-2 with two commands: `appliance invite` on the master (it edits the file and reloads), `appliance join` on node-2")
	d.joinByInvite(appliance, m, n2)
	added := time.Now()
	c.Start(n2)
	c.WaitReady(n2, 10*time.Minute)
	fmt.Printf("   node-2 Ready %s after its appliance started; %s\n", time.Since(added).Round(time.Second), lastLine(n2.Proc.Output(), "sync: token written"))
	d.ownKey(n2)
	fmt.Println(indent(c.MustKubectl("get", "nodes", "-o", "wide")))

	d.step("A pod on every node; they ping each other across the clouds, through flannel's VXLAN over wg0")
	var manifests strings.Builder
	var pods []string
	for _, n := range c.Nodes {
		manifests.WriteString(realk3s.Pod("pod-"+n.Name, n.Name, "app: demo", realk3s.Sleeper))
		pods = append(pods, "pod-"+n.Name)
	}
	ips := c.Deploy(manifests.String(), pods...)
	fmt.Println(indent(c.MustKubectl("get", "pods", "-o", "wide")))
	fmt.Printf("   pod ping (answered of 3):\n   %-16s", "from \\ to")
	for _, n := range c.Nodes {
		fmt.Printf(" %-16s", "pod-"+n.Name)
	}
	fmt.Println()
	for _, from := range c.Nodes {
		fmt.Printf("   %-16s", "pod-"+from.Name)
		for _, to := range c.Nodes {
			cell := "-"
			if from != to {
				out, _ := c.Kubectl("exec", "pod-"+from.Name, "--", "ping", "-c", "3", "-W", "2", ips["pod-"+to.Name])
				cell = fmt.Sprintf("%d/3", testnet.Received(out))
			}
			fmt.Printf(" %-16s", cell)
		}
		fmt.Println()
	}
	fmt.Println(indent("flannel.1 on node-1:\n" + firstLines(n1.Srv.Run("ip", "-d", "link", "show", "flannel.1"), 3)))

	d.step("Stopping: SIGTERM (systemctl stop) on every node, then `appliance cleanup --all` (the node stops for good)")
	for _, n := range []*testnet.Node{n2, n1, m} {
		n.Stop(&d.Script)
		_, err := n.Srv.Try("ip", "link", "show", "wg0")
		out, _ := n.Srv.Try(appliance, "cleanup", "--all", "--config", testnet.ConfigPath)
		fmt.Printf("   %s: stopped; wg0 present: %v; %s\n", n.Name, err == nil, strings.TrimSpace(firstLines(out, 1)))
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
