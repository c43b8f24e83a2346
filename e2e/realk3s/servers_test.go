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

// TestSeveralServers: three k3s servers in three clouds (the master and
// two servers, embedded etcd) and an agent in a fourth. The master's cloud
// goes off the internet: the API answers a write on another server, the
// agent stays Ready, pods keep pinging; the master comes back and rejoins.
// The agent token is refused by the servers' bootstrap endpoint.
func TestSeveralServers(t *testing.T) {
	c := newCluster(t)
	m := c.Add("k3s-master", "master", "192.168.2.1", 1)
	s1 := c.Add("k3s-server-1", "server", "192.168.2.2", 2)
	s2 := c.Add("k3s-server-2", "server", "192.168.2.3", 3)
	a := c.Add("k3s-node-1", "agent", "192.168.2.4", 4)
	all := []*testnet.Node{m, s1, s2, a}
	for _, n := range all {
		if n != m {
			os.Remove(n.Srv.HostPath(testnet.AgentTokenPath)) // each fetches its own
		}
		n.WriteConfig(all, c.File)
	}
	began := time.Now()
	for _, n := range all {
		c.Start(n)
	}

	t.Run("the three servers form etcd and every node is Ready", func(t *testing.T) {
		for _, n := range all {
			c.waitReady(n, 10*time.Minute)
			t.Logf("timing: %s Ready %s after the appliances started", n.Name, time.Since(began).Round(time.Second))
		}
		var out string
		testnet.Eventually(2*time.Minute, func() bool { // k3s labels a server once it is up
			out, _ = c.Kubectl("get", "nodes", "-l", "node-role.kubernetes.io/etcd=true", "-o", "name")
			return strings.Count(out, "node/") >= 3
		})
		for _, n := range []*testnet.Node{m, s1, s2} {
			if !strings.Contains(out, "node/"+n.Name) {
				t.Errorf("%s is not an etcd member:\n%s", n.Name, out)
			}
		}
		if strings.Contains(out, a.Name) {
			t.Errorf("the agent is an etcd member:\n%s", out)
		}
		for _, n := range []*testnet.Node{s1, s2} {
			if tok, _ := os.ReadFile(n.Srv.HostPath(testnet.TokenPath)); strings.TrimSpace(string(tok)) != testnet.Token {
				t.Errorf("%s's server token file: %q", n.Name, tok)
			}
		}
		if _, err := os.Stat(a.Srv.HostPath(testnet.TokenPath)); err == nil {
			t.Error("the agent holds the server token")
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("the bootstrap endpoint answers the server token only", func(t *testing.T) {
		boot := func(user, pass string) string {
			out, _ := a.Srv.Try("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
				"-u", user+":"+pass, "https://192.168.2.2:6443/v1-k3s/server-bootstrap")
			return strings.TrimSpace(out)
		}
		if got := boot("node", testnet.AgentToken); got != "401" && got != "403" {
			t.Errorf("the agent token: HTTP %s, want 401 or 403", got)
		}
		if got := boot("server", testnet.AgentToken); got != "401" && got != "403" {
			t.Errorf("the agent token as user server: HTTP %s, want 401 or 403", got)
		}
		if got := boot("server", testnet.Token); got != "200" {
			t.Errorf("the server token: HTTP %s, want 200", got)
		}
	})

	var manifests strings.Builder
	for _, n := range []*testnet.Node{s1, a} {
		manifests.WriteString(realk3s.Pod("pod-"+n.Name, n.Name, "app: pinger", realk3s.Sleeper))
	}
	ips := c.Deploy(manifests.String(), "pod-k3s-server-1", "pod-k3s-node-1")
	written := "" // the configmap written while the master was away

	t.Run("the master's cloud is cut off: the API answers on another server, the agent stays Ready, pods keep pinging", func(t *testing.T) {
		flow := s1.Srv.Start("env", c.KubectlArgs("exec", "pod-k3s-node-1", "--", "ping", "-c", "300", "-i", "0.2", "-W", "2", ips["pod-k3s-server-1"])...)
		if !testnet.Eventually(60*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 5 }) {
			t.Fatalf("no flow:\n%s", flow.Output())
		}
		cut := time.Now()
		m.Srv.SetUplink(false)
		var out string
		for i := 0; ; i++ {
			// A write needs an etcd majority: two of three.
			var err error
			name := fmt.Sprintf("failover-%d", i)
			out, err = c.KubectlOn(s1, "--request-timeout=5s", "create", "configmap", name)
			if err == nil {
				written = name
				break
			}
			if time.Since(cut) > 2*time.Minute {
				t.Fatalf("no write on k3s-server-1 within 2 min of the cut: %v\n%s", err, out)
			}
			time.Sleep(time.Second)
		}
		failover := time.Since(cut)
		t.Logf("timing: the API took a write on k3s-server-1 %.1f s after the master's cloud was cut off", failover.Seconds())
		if failover > 30*time.Second {
			t.Errorf("API failover took %s, want within 30 s", failover.Round(time.Second))
		}
		// The agent's sync turns to a server meanwhile.
		following := func() string {
			out, err := a.Srv.Try(applianceBin, "status", "--json")
			var r status.Report
			if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Sync == nil {
				return ""
			}
			return r.Sync.Following
		}
		if !testnet.Eventually(60*time.Second, func() bool { return strings.Contains(following(), "k3s-server-") }) {
			t.Errorf("the agent's sync does not follow a server while the master is away: %q", following())
		}
		// The agent stays Ready past the node controller's grace period.
		notReady := 0
		for end := time.Now().Add(70 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Second) {
			st, _ := c.KubectlOn(s1, "--request-timeout=5s", "get", "node", a.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if strings.TrimSpace(st) != "True" {
				notReady++
			}
		}
		if notReady > 0 {
			t.Errorf("the agent was not Ready at %d of 14 checks while the master was away", notReady)
		}
		if exited, _ := flow.Wait(3 * time.Minute); !exited {
			t.Fatal("the pod flow did not finish")
		}
		sent, got := 300, testnet.Received(flow.Output())
		t.Logf("timing: pod flow node-1 -> server-1 across the outage: %d of %d answered", got, sent)
		if got < sent*9/10 {
			t.Errorf("the pod flow lost %d of %d:\n%s", sent-got, sent, lastLines(flow.Output(), "", 5))
		}
	})

	t.Run("the master comes back and rejoins", func(t *testing.T) {
		if written == "" {
			t.Skip("nothing was written while the master was away")
		}
		back := time.Now()
		m.Srv.SetUplink(true)
		if !testnet.Eventually(5*time.Minute, func() bool {
			st, _ := c.KubectlOn(s1, "--request-timeout=5s", "get", "node", m.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			_, err := c.KubectlOn(m, "--request-timeout=5s", "get", "configmap", written)
			return strings.TrimSpace(st) == "True" && err == nil
		}) {
			out, _ := c.KubectlOn(s1, "get", "nodes", "-o", "wide")
			own, err := c.KubectlOn(m, "--request-timeout=5s", "get", "configmap", written)
			t.Fatalf("the master did not rejoin:\n%s\non the master: %v %s\n%s", out, err, own, lastLines(m.Proc.Output(), "", 20))
		}
		t.Logf("timing: the master Ready again and serving the write made without it %.1f s after its cloud came back", time.Since(back).Seconds())
	})

	for _, n := range []*testnet.Node{a, s2, s1, m} {
		n.Stop(t)
	}
}
