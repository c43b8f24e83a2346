//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// exitCode runs the appliance with args in srv and returns its exit code
// and output.
func exitCode(t *testing.T, srv *testnet.Server, args ...string) (int, string) {
	t.Helper()
	out, err := srv.Try(applianceBin, args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out
	case errors.As(err, &ee):
		return ee.ExitCode(), out
	}
	t.Fatalf("running the appliance: %v\n%s", err, out)
	return -1, ""
}

// TestNeverTouchesAnInterfaceItDidNotMake: interface.name naming the
// uplink, another veth or another program's TUN is refused by check and by
// start (exit 2, nothing changed), and cleanup leaves such links alone.
func TestNeverTouchesAnInterfaceItDidNotMake(t *testing.T) {
	_, m, _ := twoClouds(t)
	srv := m.Srv
	srv.Run("ip", "link", "add", "veth7", "type", "veth", "peer", "name", "veth7p")
	srv.Run("ip", "tuntap", "add", "tun7", "mode", "tun")
	srv.Run("ip", "link", "add", "wg0", "type", "veth", "peer", "name", "wg0p")
	for _, tt := range []struct{ iface, want string }{
		{"eth0", "egress interface"},
		{"veth7", "existing veth interface"},
		{"tun7", "tuntap interface of that name exists"},
		{"wg0", "existing veth interface"},
	} {
		t.Run(tt.iface, func(t *testing.T) {
			m.WriteConfig([]*node{m}, func(s string) string {
				return strings.Replace(s, "interface:\n", "interface:\n  name: "+tt.iface+"\n", 1)
			})
			code, out := exitCode(t, srv, "check", "--config", configPath)
			if code != 1 || !strings.Contains(out, tt.want) {
				t.Errorf("check: exit %d, want 1 with %q:\n%s", code, tt.want, out)
			}
			code, out = exitCode(t, srv, "--role", "master", "--config", configPath)
			if code != 2 || !strings.Contains(out, tt.want) || !strings.Contains(out, "fix:") {
				t.Errorf("start: exit %d, want 2 with %q and a fix:\n%s", code, tt.want, out)
			}
			if strings.Contains(out, "such as "+tt.iface) || (strings.Contains(out, "free name such as") && !strings.Contains(out, "such as wg1")) {
				t.Errorf("the fix suggests a name that is taken:\n%s", out)
			}
			code, out = exitCode(t, srv, "cleanup", "--interface", tt.iface)
			if code != 0 {
				t.Errorf("cleanup --interface %s: exit %d:\n%s", tt.iface, code, out)
			}
			if _, err := srv.Try("ip", "link", "show", tt.iface); err != nil {
				t.Fatalf("%s was removed", tt.iface)
			}
			if strings.Contains(srv.Run("iptables-save"), "WGK3S") {
				t.Error("a refused start left rules behind")
			}
		})
	}
	// The uplink still works: the router answers.
	if got, out := srv.Ping("10.1.1.1", 2, 200*time.Millisecond); got != 2 {
		t.Errorf("the uplink is broken:\n%s", out)
	}
}

// TestWgAddressHeldByAnotherInterface: the node's wg address on another
// interface is refused at start, by check and on reload, with the fix.
func TestWgAddressHeldByAnotherInterface(t *testing.T) {
	_, m, n1 := twoClouds(t)
	m.Srv.Run("ip", "link", "add", "dummy7", "type", "veth", "peer", "name", "dummy7p")
	m.Srv.Run("ip", "addr", "add", "192.168.2.1/24", "dev", "dummy7")
	m.WriteConfig([]*node{m, n1}, nil)
	const want = "192.168.2.1 (nodes[].address of k3s-master) is already on dummy7"
	code, out := exitCode(t, m.Srv, "check", "--config", configPath)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("check: exit %d, want 1 with %q:\n%s", code, want, out)
	}
	code, out = exitCode(t, m.Srv, "--role", "master", "--config", configPath)
	if code != 2 || !strings.Contains(out, want) || !strings.Contains(out, "ip addr del 192.168.2.1 dev dummy7") {
		t.Errorf("start: exit %d, want 2 with %q:\n%s", code, want, out)
	}

	// Running, then a reload moves this node onto an address another
	// interface holds: rejected, the running configuration stays.
	m.Srv.Run("ip", "addr", "del", "192.168.2.1/24", "dev", "dummy7")
	m.Srv.Run("ip", "addr", "add", "192.168.2.9/24", "dev", "dummy7")
	startAll(t, []*node{m, n1})
	pingUntil(t, n1, "192.168.2.1")
	m.WriteConfig([]*node{m, n1}, func(s string) string { return strings.Replace(s, "address: 192.168.2.1", "address: 192.168.2.9", 1) })
	m.Reload(t, "reload rejected")
	if !strings.Contains(m.Proc.Output(), "192.168.2.9 (nodes[].address of k3s-master) is already on dummy7") {
		t.Errorf("the reload did not say why:\n%s", m.Proc.Output())
	}
	pingUntil(t, n1, "192.168.2.1")
}

// TestDeletedInterfaceFailsClosed deletes wg0 under running ping flows,
// one to the mesh and one to a pod on the other node through flannel's
// VXLAN over wg0 (which goes with wg0): no packet for the mesh or the pod
// network may leave by eth0 in the clear, wg0 comes back with its
// configuration, the flows resume and status counts it.
func TestDeletedInterfaceFailsClosed(t *testing.T) {
	_, m, n1 := twoClouds(t)
	startAll(t, []*node{m, n1})
	pingUntil(t, m, "192.168.2.2")
	// flannel.1 on both, and a "pod" address on node-1's side.
	flannel(t, m.Srv, "192.168.2.1", "10.42.0.0", "02:00:00:00:00:01", "192.168.2.2", "10.42.1.0", "02:00:00:00:00:02")
	flannel(t, n1.Srv, "192.168.2.2", "10.42.1.0", "02:00:00:00:00:02", "192.168.2.1", "10.42.0.0", "02:00:00:00:00:01")
	n1.Srv.Run("ip", "addr", "add", "10.42.1.5/32", "dev", "flannel.1")
	if got, out := m.Srv.Ping("10.42.1.5", 3, 200*time.Millisecond); got != 3 {
		t.Fatalf("no pod traffic over flannel.1 before the test:\n%s", out)
	}
	// Count what leaves eth0 for the mesh and the pods (after the start:
	// the rules must not sway the appliance's choice of iptables backend).
	for _, dst := range []string{"192.168.2.0/24", "10.42.0.0/16"} {
		m.Srv.Run("iptables-legacy", "-I", "OUTPUT", "1", "-o", "eth0", "-d", dst)
	}
	flow := m.Srv.Start("ping", "-i", "0.01", "-c", "600", "-W", "1", "192.168.2.2")
	pods := m.Srv.Start("ping", "-i", "0.01", "-c", "600", "-W", "1", "10.42.1.5")
	if !testnet.Eventually(5*time.Second, func() bool { return strings.Count(flow.Output(), "bytes from") > 20 }) {
		t.Fatalf("no flow:\n%s", flow.Output())
	}
	m.Srv.Run("ip", "link", "del", "wg0")
	if !m.Proc.WaitOutput("the WireGuard interface is back", 10*time.Second) {
		t.Fatalf("wg0 was not recreated:\n%s", m.Proc.Output())
	}
	pingUntil(t, m, "192.168.2.2")
	flow.Wait(20 * time.Second)
	pods.Wait(20 * time.Second)
	counters := m.Srv.Run("iptables-legacy", "-L", "OUTPUT", "-v", "-n", "-x")
	for _, dst := range []string{"192.168.2.0/24", "10.42.0.0/16"} {
		found := false
		for _, l := range strings.Split(counters, "\n") {
			if f := strings.Fields(l); len(f) > 2 && strings.Contains(l, "eth0") && strings.Contains(l, dst) {
				found = true
				if f[0] != "0" {
					t.Errorf("%s packets for %s left by eth0 in the clear while wg0 and flannel.1 were gone:\n%s", f[0], dst, counters)
				}
			}
		}
		if !found {
			t.Fatalf("the counting rule for %s is gone:\n%s", dst, counters)
		}
	}
	if out := m.Srv.Run("ip", "route", "show", "type", "blackhole"); !strings.Contains(out, "192.168.2.0/24") || !strings.Contains(out, "10.42.0.0/16") {
		t.Errorf("no fail-closed route for the mesh and the pods while running:\n%s", out)
	}
	r := statusJSON(t, m)
	if r.Recreations != 1 || len(r.Peers) != 1 {
		t.Errorf("status after the recreation: %d recreations, %d peers", r.Recreations, len(r.Peers))
	}
	if !m.Proc.WaitOutput("restarting k3s", 5*time.Second) || !strings.Contains(m.Proc.Output(), "the WireGuard interface was recreated") {
		t.Errorf("k3s was not restarted after wg0 came back, or the log does not say why:\n%s", m.Proc.Output())
	}
	if strings.Contains(m.Proc.Output(), "command line changed") {
		t.Errorf("the restart is logged as a command line change:\n%s", m.Proc.Output())
	}
	if !testnet.Eventually(10*time.Second, func() bool { return statusJSON(t, m).K3s.Restarts == 1 }) {
		t.Errorf("status counts %d k3s restarts after one recreation", statusJSON(t, m).K3s.Restarts)
	}
	m.Stop(t)
	if out := m.Srv.Run("ip", "route", "show", "type", "blackhole"); strings.Contains(out, "192.168.2.0/24") || strings.Contains(out, "10.42.0.0/16") {
		t.Errorf("a clean stop left the fail-closed routes:\n%s", out)
	}
}

// TestCleanUpAfterACrashAndANetworkChange: a crashed run's fail-closed
// routes stay for the file's current networks (until the next start) and
// go for a network the file no longer has; --all removes the rest; a
// cleanup next to a running appliance is refused.
func TestCleanUpAfterACrashAndANetworkChange(t *testing.T) {
	_, m, n1 := twoClouds(t)
	startAll(t, []*node{m, n1})
	if code, out := exitCode(t, m.Srv, "cleanup", "--config", configPath); code == 0 || !strings.Contains(out, "an appliance is running here") || !strings.Contains(out, "--force") {
		t.Errorf("cleanup next to a running appliance: %d\n%s", code, out)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", m.Proc.Pid())); err != nil || !strings.Contains(wgShow(t, m.Srv), "peer") {
		t.Fatal("the refused cleanup touched the running appliance")
	}
	// Stopped (SIGSTOP), it answers nothing, but it still runs: refused.
	m.Proc.Signal(syscall.SIGSTOP)
	code, out := exitCode(t, m.Srv, "cleanup", "--config", configPath)
	m.Proc.Signal(syscall.SIGCONT)
	if code == 0 || !strings.Contains(out, "an appliance is running here") || !strings.Contains(wgShow(t, m.Srv), "peer") {
		t.Errorf("cleanup next to a stopped appliance: %d\n%s", code, out)
	}
	// With --force it removes wg0 under the running appliance, which makes
	// it again; the record of the new link stays (the cleanup removes only
	// the record of the link it removed), so a later cleanup knows it.
	if code, out := exitCode(t, m.Srv, "cleanup", "--force", "--config", configPath); code != 0 {
		t.Fatalf("cleanup --force: %d\n%s", code, out)
	}
	if !m.Proc.WaitOutput("the WireGuard interface is back", 15*time.Second) {
		t.Fatalf("the appliance did not make wg0 again:\n%s", m.Proc.Output())
	}
	var rec []byte
	var idx string
	if !testnet.Eventually(5*time.Second, func() bool {
		rec, _ = os.ReadFile(m.Srv.HostPath("/run/wgk3s/link-wg0"))
		idx = strings.TrimSpace(m.Srv.Run("cat", "/sys/class/net/wg0/ifindex"))
		return idx != "" && strings.TrimSpace(string(rec)) == idx
	}) {
		t.Errorf("after cleanup --force and the appliance's recreation, the link record is %q, wg0's index %q", rec, idx)
	}
	m.Proc.Signal(syscall.SIGKILL)
	m.Proc.Wait(10 * time.Second)
	// systemd runs the cleanup (ExecStopPost) once every process of the
	// unit is gone; the test waits for the same: nothing holds the lock
	// (once in about ten runs something still did for a moment after the
	// appliance itself exited: a child between fork and exec, presumably).
	if !testnet.Eventually(10*time.Second, func() bool {
		_, err := m.Srv.Try("flock", "-n", "-s", "/run/wgk3s/status.sock.lock", "true")
		return err == nil
	}) {
		t.Fatal("the killed appliance's status lock is still held 10 s later")
	}
	// The file moves to another network; the crashed run's route is stale.
	moved := func(s string) string { return strings.ReplaceAll(s, "192.168.2.", "192.168.7.") }
	m.WriteConfig([]*node{m, n1}, moved)
	code, out = exitCode(t, m.Srv, "cleanup", "--config", configPath)
	routes := m.Srv.Run("ip", "route", "show", "type", "blackhole")
	if code != 0 || strings.Contains(routes, "192.168.2.0/24") || !strings.Contains(out, "removed the fail-closed routes for 192.168.2.0/24") {
		t.Errorf("cleanup of a stale network: %d\n%s\nroutes:\n%s", code, out, routes)
	}
	if !strings.Contains(routes, "10.42.0.0/16") || !strings.Contains(out, "kept the fail-closed routes for 10.42.0.0/16") {
		t.Errorf("the current pod network's route was not kept, or not said:\n%s\n%s", out, routes)
	}
	if code, out := exitCode(t, m.Srv, "cleanup", "--all", "--config", configPath); code != 0 || m.Srv.Run("ip", "route", "show", "type", "blackhole") != "" {
		t.Errorf("cleanup --all: %d\n%s\n%s", code, out, m.Srv.Run("ip", "route", "show", "type", "blackhole"))
	}
}

// TestReloadWithAFIFOAtThePath: a FIFO where the cluster file was must not
// block the signal loop: the reload is rejected and SIGTERM still stops.
func TestReloadWithAFIFOAtThePath(t *testing.T) {
	_, m, n1 := twoClouds(t)
	startAll(t, []*node{m, n1})
	m.Srv.Run("sh", "-c", "rm "+configPath+" && mkfifo "+configPath)
	m.Reload(t, "reload rejected")
	if !strings.Contains(m.Proc.Output(), "a named pipe (FIFO), not a regular file") {
		t.Errorf("the rejection does not say why:\n%s", m.Proc.Output())
	}
	pingUntil(t, m, "192.168.2.2")
	m.Stop(t)
}

// TestBusyUDPPortIsNamed: another process on the WireGuard port gets a
// message that says so, not "errno=-98".
func TestBusyUDPPortIsNamed(t *testing.T) {
	_, m, n1 := twoClouds(t)
	m.Srv.ListenPacket("udp4", "0.0.0.0:5418")
	m.WriteConfig([]*node{m, n1}, nil)
	code, out := exitCode(t, m.Srv, "--role", "master", "--config", configPath)
	if code != 1 || !strings.Contains(out, "UDP port 5418 is in use by another process") || !strings.Contains(out, "fix:") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if _, err := m.Srv.Try("ip", "link", "show", "wg0"); err == nil {
		t.Error("a failed start left wg0")
	}
}
