//go:build linux

package testnet

import (
	"os"
	"strings"
	"testing"
)

// TestAMachineIsItsOwnHost: a machine has its own hostname, pid 1, /run,
// node directories and cgroup root; the host-wide tunables the kubelet
// checks read its values and cannot be written; and everything goes when
// the test ends.
func TestAMachineIsItsOwnHost(t *testing.T) {
	Requirements(t, "unshare", "nsenter")
	var dir string
	var cgroups []string
	t.Run("inside", func(t *testing.T) {
		n := New(t)
		m := n.AddMachine("m1", 1, "k3s-node-9")
		dir, cgroups = m.dir, m.cgroups
		if got := strings.TrimSpace(m.Run("hostname")); got != "k3s-node-9" {
			t.Errorf("hostname %q", got)
		}
		if got := strings.TrimSpace(m.Run("sh", "-c", "echo $$; cat /proc/1/comm")); !strings.HasSuffix(got, "sleep") {
			t.Errorf("pid 1 is not the machine's init: %q", got)
		}
		m.Run("sh", "-c", "echo x > /run/wgk3s/mark && echo y > /var/lib/rancher/mark")
		if _, err := os.Stat("/run/wgk3s/mark"); err == nil {
			t.Error("the machine's /run is the host's")
		}
		if _, err := os.Stat("/var/lib/rancher/mark"); err == nil {
			t.Error("the machine's /var/lib/rancher is the host's")
		}
		if got := m.Run("cat", "/proc/self/cgroup"); strings.Contains(got, n.id) {
			t.Errorf("the machine sees the host's cgroup paths:\n%s", got)
		}
		if got := strings.TrimSpace(m.Run("cat", "/proc/sys/vm/overcommit_memory")); got != "1" {
			t.Errorf("vm.overcommit_memory reads %q inside", got)
		}
		before, _ := os.ReadFile("/proc/sys/kernel/panic")
		if out, err := m.Try("sh", "-c", "echo 33 > /proc/sys/kernel/panic_on_oops_x 2>&1; echo 7 > /proc/sys/kernel/sysrq"); err == nil {
			t.Errorf("a host-wide sysctl is writable in the machine: %s", out)
		}
		if after, _ := os.ReadFile("/proc/sys/kernel/panic"); string(after) != string(before) {
			t.Errorf("kernel.panic changed on the host: %q -> %q", before, after)
		}
		m.Run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward") // the network namespace's own
		p := m.Start("sleep", "300")
		if p.Pid() == 0 {
			t.Fatal("no pid")
		}
		b, _ := os.ReadFile(cgroups[0] + "/cgroup.procs")
		if !strings.Contains(string(b), "\n") {
			t.Errorf("the machine's processes are not in its cgroup")
		}
	})
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the machine's directory %s is left", dir)
	}
	for _, c := range cgroups {
		if _, err := os.Stat(c); err == nil {
			t.Errorf("the machine's cgroup %s is left", c)
		}
	}
}
