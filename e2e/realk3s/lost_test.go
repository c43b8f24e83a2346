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

// TestMasterMachineLost: the master and two servers in etcd, an agent. The
// master's machine is destroyed (its processes killed, its disks deleted:
// not a network cut). `appliance promote` on server-1 makes it the master:
// the lost etcd member is removed, every node follows server-1, the API is
// writable, pods on the surviving nodes keep answering, and an agent
// server-1 invites joins and becomes Ready.
func TestMasterMachineLost(t *testing.T) {
	c := newCluster(t)
	m := c.Add("k3s-master", "master", "192.168.2.1", 1)
	s1 := c.Add("k3s-server-1", "server", "192.168.2.2", 2)
	s2 := c.Add("k3s-server-2", "server", "192.168.2.3", 3)
	a := c.Add("k3s-node-1", "agent", "192.168.2.4", 4)
	all := []*testnet.Node{m, s1, s2, a}
	for _, n := range all {
		if n != m {
			os.Remove(n.Srv.HostPath(testnet.AgentTokenPath))
		}
		n.WriteConfig(all, c.File)
	}
	for _, n := range all {
		c.Start(n)
	}
	for _, n := range all {
		c.waitReady(n, 10*time.Minute)
	}
	var manifests strings.Builder
	for _, n := range []*testnet.Node{s2, a} {
		manifests.WriteString(realk3s.Pod("pod-"+n.Name, n.Name, "app: pinger", realk3s.Sleeper))
	}
	ips := c.Deploy(manifests.String(), "pod-k3s-server-2", "pod-k3s-node-1")
	flow := s2.Srv.Start("env", c.KubectlArgs("exec", "pod-k3s-node-1", "--", "ping", "-c", "600", "-i", "0.2", "-W", "2", ips["pod-k3s-server-2"])...)
	if !testnet.Eventually(60*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 5 }) {
		t.Fatalf("no pod flow:\n%s", flow.Output())
	}

	lost := time.Now()
	m.Srv.Destroy()
	t.Log("the master's machine is destroyed")

	t.Run("promote server-1: the lost etcd member goes, the API is writable, every node follows it", func(t *testing.T) {
		out, err := s1.Srv.Try("env", append([]string{"PATH=" + c.Path()}, applianceBin, "promote", "--config", testnet.ConfigPath, "--env-file", "/run/wgk3s/sysconfig-wgk3s")...)
		if err != nil || !strings.Contains(out, "k3s-server-1 is the master now") {
			t.Fatalf("promote: %v\n%s", err, out)
		}
		t.Logf("promote said:\n%s", out)
		s1.Stop(t)
		s1.Role = "master"
		c.Start(s1)
		c.Nodes = []*testnet.Node{s1, s2, a} // kubectl asks the master: server-1 now
		if !testnet.Eventually(3*time.Minute, func() bool {
			info, _ := s1.Srv.Try("curl", "-sk", "--max-time", "5", "https://127.0.0.1:6443/db/info")
			return strings.Contains(info, "k3s-server-1") && strings.Contains(info, "k3s-server-2") && !strings.Contains(info, "k3s-master")
		}) {
			info, _ := s1.Srv.Try("curl", "-sk", "--max-time", "5", "https://127.0.0.1:6443/db/info")
			t.Errorf("etcd's members after promote: %s", info)
		}
		var err2 error
		if !testnet.Eventually(2*time.Minute, func() bool {
			_, err2 = c.KubectlOn(s1, "--request-timeout=5s", "create", "configmap", "after-the-loss")
			return err2 == nil
		}) {
			t.Errorf("the API does not take a write: %v", err2)
		}
		t.Logf("timing: the API took a write %.1f s after the master's machine was lost", time.Since(lost).Seconds())
		for _, n := range []*testnet.Node{s2, a} {
			if !testnet.Eventually(2*time.Minute, func() bool {
				var r status.Report
				out, err := n.Srv.Try(applianceBin, "status", "--json")
				return err == nil && json.Unmarshal([]byte(out), &r) == nil && r.Sync != nil && r.Sync.Master == "192.168.2.2:5419" && r.Sync.Following == ""
			}) {
				t.Errorf("%s does not follow the promoted master:\n%s", n.Name, n.Srv.Run(applianceBin, "status"))
			}
		}
		c.waitReady(a, 3*time.Minute)
	})

	t.Run("an agent the promoted master invites joins and becomes Ready", func(t *testing.T) {
		n5 := c.Add("k3s-node-5", "agent", "192.168.2.5", 5)
		code, err := s1.Srv.Try(applianceBin, "invite", "k3s-node-5", "--config", testnet.ConfigPath, "--endpoint", fmt.Sprintf("%s:%d", n5.Srv.PublicIP, testnet.Port))
		code = strings.TrimPrefix(strings.TrimSpace(lastLines(code, "appliance join ", 1)), "appliance join ")
		if err != nil || code == "" {
			t.Fatalf("invite: %v\n%s", err, code)
		}
		os.Remove(n5.Srv.HostPath(testnet.ConfigPath))
		os.Remove(n5.Srv.HostPath(testnet.KeyPath))
		os.Remove(n5.Srv.HostPath(testnet.AgentTokenPath))
		if out, err := n5.Srv.Try(applianceBin, "join", "--config", testnet.ConfigPath, "--env-file", "/run/wgk3s/sysconfig-wgk3s", code); err != nil {
			t.Fatalf("join: %v\n%s", err, out)
		}
		c.Start(n5)
		c.waitReady(n5, 5*time.Minute)
	})

	exited, _ := flow.Wait(3 * time.Minute)
	sent, got := 600, testnet.Received(flow.Output())
	t.Logf("timing: pod flow node-1 -> server-2 across the loss and the promotion: %d of %d answered (exited %v)", got, sent, exited)
	if got < sent*9/10 {
		t.Errorf("the pod flow lost %d of %d:\n%s", sent-got, sent, lastLines(flow.Output(), "", 5))
	}
	for _, n := range []*testnet.Node{a, s2, s1} {
		n.Stop(t)
	}
}
