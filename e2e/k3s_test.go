//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// standinRecord is what the stand-in k3s writes about itself.
type standinRecord struct {
	PID          int      `json:"pid"`
	PPID         int      `json:"ppid"`
	Role         string   `json:"role"`
	Argv         []string `json:"argv"`
	TokenInArgv  bool     `json:"token_in_argv"`
	TokenInEnv   bool     `json:"token_in_env"`
	NotifySocket bool     `json:"notify_socket"`
}

// records returns the stand-in's records on srv, oldest first.
func records(t *testing.T, srv *testnet.Server) []standinRecord {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(srv.HostPath(standinDir), "k3s-*.json"))
	var out []standinRecord
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r standinRecord
		if json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// k3sPID returns the pid of the k3s child the appliance reports in its log.
func k3sPID(n *node) int {
	out := n.Proc.Output()
	i := strings.LastIndex(out, "msg=\"k3s started\" pid=")
	if i < 0 {
		return 0
	}
	f := strings.Fields(out[i+len("msg=\"k3s started\" pid="):])
	pid, _ := strconv.Atoi(f[0])
	return pid
}

func events(srv *testnet.Server) string {
	b, _ := os.ReadFile(filepath.Join(srv.HostPath(standinDir), "events.log"))
	return string(b)
}

func processExists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return pid > 0 && err == nil
}

func TestK3sSupervision(t *testing.T) {
	_, m, n1 := twoClouds(t)
	nodes := []*node{m, n1}
	startAll(t, nodes)

	t.Run("the agent joins the server through the tunnel", func(t *testing.T) {
		if !testnet.Eventually(20*time.Second, func() bool {
			return strings.Contains(events(m.Srv), "server accepted k3s-node-1 from 192.168.2.2:")
		}) {
			t.Fatalf("no join on the master; events:\n%s\nagent log:\n%s", events(m.Srv), n1.Proc.Output())
		}
		if !strings.Contains(n1.Proc.Output(), "k3s server is reachable") {
			t.Errorf("the agent did not wait for the server through the tunnel:\n%s", n1.Proc.Output())
		}
		if !strings.Contains(m.Proc.Output(), "component=k3s") || !strings.Contains(m.Proc.Output(), "standin k3s server k3s-master listening on 192.168.2.1:6443") {
			t.Errorf("k3s output is not in the appliance's log:\n%s", m.Proc.Output())
		}
	})

	t.Run("no token in argv or environment", func(t *testing.T) {
		for _, n := range nodes {
			pid := k3sPID(n)
			for _, f := range []string{"cmdline", "environ"} {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
				if err != nil {
					t.Fatalf("%s: %v", n.Name, err)
				}
				if strings.Contains(string(b), token) || strings.Contains(string(b), agentToken) {
					t.Errorf("%s: a token is in /proc/%d/%s", n.Name, pid, f)
				}
				if f == "environ" && strings.Contains(string(b), "NOTIFY_SOCKET") {
					t.Errorf("%s: k3s inherited NOTIFY_SOCKET", n.Name)
				}
			}
			recs := records(t, n.Srv)
			if len(recs) == 0 {
				t.Fatalf("%s: the stand-in left no record", n.Name)
			}
			r := recs[len(recs)-1]
			if r.TokenInArgv || r.TokenInEnv || r.NotifySocket {
				t.Errorf("%s: the stand-in saw %+v", n.Name, r)
			}
			// A server's k3s reads both tokens; an agent's only the agent token.
			want := []string{"--token-file " + agentTokenPath}
			if n.Role == "master" || n.Role == "server" {
				want = []string{"--token-file " + tokenPath, "--agent-token-file " + agentTokenPath}
			}
			for _, w := range want {
				if !strings.Contains(strings.Join(r.Argv, " "), w) {
					t.Errorf("%s: argv %v lacks %s", n.Name, r.Argv, w)
				}
			}
		}
	})

	t.Run("a crash is restarted with backoff", func(t *testing.T) {
		pid := k3sPID(n1)
		syscall.Kill(pid, syscall.SIGUSR1)
		if !testnet.Eventually(10*time.Second, func() bool { p := k3sPID(n1); return p != 0 && p != pid }) {
			t.Fatalf("not restarted:\n%s", n1.Proc.Output())
		}
		out := n1.Proc.Output()
		if !strings.Contains(out, `msg="k3s exited" status="exit status 3"`) || !strings.Contains(out, `msg="k3s will be restarted" in=1s`) {
			t.Errorf("exit or backoff not logged:\n%s", out)
		}
		if processExists(pid) {
			t.Errorf("the crashed child %d is still a process (zombie?)", pid)
		}
		// The new agent joins again.
		if !testnet.Eventually(10*time.Second, func() bool { return strings.Count(events(m.Srv), "server accepted k3s-node-1") >= 2 }) {
			t.Errorf("the restarted agent did not rejoin:\n%s", events(m.Srv))
		}
	})

	t.Run("SIGKILL of the appliance takes k3s with it", func(t *testing.T) {
		pid := k3sPID(n1)
		n1.Proc.Signal(syscall.SIGKILL)
		n1.Proc.Wait(5 * time.Second)
		if !testnet.Eventually(5*time.Second, func() bool { return !processExists(pid) }) {
			t.Fatalf("k3s %d survived the appliance's SIGKILL", pid)
		}
	})

	t.Run("SIGTERM stops k3s within the grace period", func(t *testing.T) {
		pid := k3sPID(m)
		began := time.Now()
		m.Stop(t)
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("stop took %v, longer than the 5s grace", took)
		}
		if processExists(pid) {
			t.Errorf("k3s %d still exists after the appliance stopped", pid)
		}
		if !strings.Contains(events(m.Srv), fmt.Sprintf("stop pid=%d", pid)) {
			t.Errorf("k3s was not stopped with SIGTERM:\n%s", events(m.Srv))
		}
	})
}
