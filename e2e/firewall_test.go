//go:build linux

package e2e

import (
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/internal/testnet"
)

var saveNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`)

// iptablesSave returns the server's rules in backend, without counters and
// comments, so that two snapshots compare.
func iptablesSave(t *testing.T, srv *testnet.Server, backend string) string {
	t.Helper()
	return saveNoise.ReplaceAllString(srv.Run("iptables-"+backend+"-save"), "")
}

// ownedRules returns the lines of the save output that the appliance owns.
func ownedRules(save string) []string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.Contains(l, "WGK3S") || strings.Contains(l, "wgk3s") {
			out = append(out, l)
		}
	}
	return out
}

func requireOnce(t *testing.T, save string) {
	t.Helper()
	seen := map[string]int{}
	for _, l := range ownedRules(save) {
		seen[l]++
	}
	if len(seen) < 10 { // 3 chains + 3 jumps + 6 rules
		t.Fatalf("only %d owned lines:\n%s", len(seen), save)
	}
	for l, n := range seen {
		if n != 1 {
			t.Errorf("%d copies of %s", n, l)
		}
	}
}

func TestFirewall(t *testing.T) {
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			testnet.Requirements(t, "iptables-"+backend+"-save")
			net := testnet.New(t)
			m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
			edit := func(s string) string { return s + "firewall:\n  backend: " + backend + "\n" }
			m.WriteConfig([]*node{m}, edit)
			srv := m.Srv
			// The server has rules of its own in both tables before the
			// appliance starts, as a real host does (with nft, an empty nat
			// table that the appliance created would outlive it).
			srv.Run("iptables-"+backend, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "2222", "-j", "REDIRECT", "--to-ports", "22")
			srv.Run("iptables-"+backend, "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
			before := iptablesSave(t, srv, backend)
			fwdBefore := srv.Run("sysctl", "-n", "net.ipv4.ip_forward")

			m.Start(t)
			if !strings.Contains(m.Proc.Output(), "firewall="+backend) {
				t.Errorf("backend not used:\n%s", m.Proc.Output())
			}
			requireOnce(t, iptablesSave(t, srv, backend))
			if got := strings.TrimSpace(srv.Run("sysctl", "-n", "net.ipv4.ip_forward")); got != "1" {
				t.Errorf("ip_forward = %s while running", got)
			}

			t.Run("masquerade works for real", func(t *testing.T) {
				// From the wg address out through eth0 to the router's inside
				// address: the router has no route back to 192.168.2.0/24, so
				// only a source rewritten to 10.1.1.2 gets an answer.
				if got, out := srv.Ping("-I 192.168.2.1 10.1.1.1", 3, 100*time.Millisecond); got != 3 {
					t.Fatalf("masqueraded ping: %d of 3 answered\n%s", got, out)
				}
				counters := srv.Run("iptables-"+backend, "-t", "nat", "-L", "WGK3S-POSTROUTING", "-n", "-v", "-x")
				if !regexp.MustCompile(`(?m)^\s+[1-9]\d*\s+\d+\s+MASQUERADE`).MatchString(counters) {
					t.Errorf("the MASQUERADE rule counted no packets:\n%s", counters)
				}
				// Turned off by a reload, the same ping goes unanswered.
				m.WriteConfig([]*node{m}, func(s string) string { return edit(s) + "  masquerade: false\n" })
				m.Reload(t, "msg=reloaded")
				if got, _ := srv.Ping("-I 192.168.2.1 10.1.1.1", 2, 100*time.Millisecond); got != 0 {
					t.Errorf("%d pings answered without masquerade: the test proves nothing", got)
				}
				m.WriteConfig([]*node{m}, edit)
				m.Reload(t, "msg=reloaded")
			})

			t.Run("10 restarts, half of them SIGKILL, leave each rule once", func(t *testing.T) {
				for i := 0; i < 10; i++ {
					if i%2 == 0 {
						m.Proc.Signal(syscall.SIGKILL)
						m.Proc.Wait(5 * time.Second)
					} else {
						m.Stop(t)
					}
					m.Start(t)
				}
				requireOnce(t, iptablesSave(t, srv, backend))
			})

			t.Run("deleted rules come back within the reconcile period", func(t *testing.T) {
				srv.Run("iptables-"+backend, "-D", "WGK3S-INPUT", "-m", "comment", "--comment", "wgk3s: WireGuard UDP", "-p", "udp", "--dport", "5418", "-j", "ACCEPT")
				srv.Run("iptables-"+backend, "-F", "FORWARD")
				if !testnet.Eventually(12*time.Second, func() bool {
					s := iptablesSave(t, srv, backend)
					return strings.Contains(s, "--dport 5418") && strings.Contains(s, "-A FORWARD -m comment --comment wgk3s -j WGK3S-FORWARD")
				}) {
					t.Fatalf("rules not restored:\n%s", iptablesSave(t, srv, backend))
				}
				requireOnce(t, iptablesSave(t, srv, backend))
			})

			t.Run("a clean stop restores iptables and sysctls", func(t *testing.T) {
				m.Stop(t)
				if diff := cmp.Diff(before, iptablesSave(t, srv, backend)); diff != "" {
					t.Errorf("iptables-save after stop (-before +after):\n%s", diff)
				}
				if got := srv.Run("sysctl", "-n", "net.ipv4.ip_forward"); got != fwdBefore {
					t.Errorf("ip_forward = %q after stop, want %q", got, fwdBefore)
				}
			})

			t.Run("appliance cleanup removes what a killed run left", func(t *testing.T) {
				m.Start(t)
				m.Proc.Signal(syscall.SIGKILL)
				m.Proc.Wait(5 * time.Second)
				if len(ownedRules(iptablesSave(t, srv, backend))) == 0 {
					t.Fatal("test bug: the killed run left nothing to clean")
				}
				srv.Run(applianceBin, "cleanup", "--config", configPath)
				if diff := cmp.Diff(before, iptablesSave(t, srv, backend)); diff != "" {
					t.Errorf("iptables-save after cleanup (-before +after):\n%s", diff)
				}
				if got := srv.Run("sysctl", "-n", "net.ipv4.ip_forward"); got != fwdBefore {
					t.Errorf("ip_forward = %q after cleanup, want %q", got, fwdBefore)
				}
				if _, err := os.Stat(srv.HostPath("/run/wireguard/wg0.sock")); !os.IsNotExist(err) {
					t.Errorf("socket left after cleanup: %v", err)
				}
				srv.Run(applianceBin, "cleanup", "--config", configPath) // nothing left: still succeeds
			})
		})
	}
}
