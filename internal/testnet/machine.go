//go:build linux

package testnet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A machine is a server with what a real k3s node needs of a host of its
// own, so that several run on one test host without touching it:
//
//   - its own mount namespace: a private /run (tmpfs) and its own
//     /var/lib/rancher, /etc/rancher, /var/lib/kubelet, /var/lib/cni,
//     /var/log/pods and /var/log/containers, bound from a directory of the
//     test; / is made rshared inside, as the kubelet wants for volumes;
//   - its own pid namespace: when the test ends, killing its init ends k3s,
//     containerd's shims and every pod at once;
//   - its own UTS namespace (the hostname is the node's name);
//   - its own cgroups: a subtree of the test's own cgroup in every
//     hierarchy, seen as the root through a cgroup namespace, so the
//     kubelet's kubepods hierarchy lands inside it;
//   - the host-wide kernel tunables the kubelet checks (vm.overcommit_memory,
//     kernel.panic, ...) read-only, with the values it wants bound over
//     them, and /proc/sys/{kernel,vm,fs} and /sys/module read-only, so that
//     nothing in it changes the host's sysctls or module parameters.
//
// Network sysctls are the network namespace's own, as on any server.

// kubeletTunables are the host-wide sysctls the kubelet wants
// (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables); it
// writes them only when they differ.
var kubeletTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// machineBinds are the node's own directories.
var machineBinds = []string{"/var/lib/rancher", "/etc/rancher", "/var/lib/kubelet", "/var/lib/cni", "/var/log/pods", "/var/log/containers"}

// AddMachine adds cloud number idx like AddServer, but the server is a
// machine of its own (see above) with hostname hostname.
func (n *Net) AddMachine(name string, idx int, hostname string) *Server {
	n.t.Helper()
	return n.AddMachineBehind(name, idx, hostname, OneToOne)
}

// AddMachineBehind is AddMachine behind a router with the given NAT (a
// home machine: Cone or Symmetric, see AddHome).
func (n *Net) AddMachineBehind(name string, idx int, hostname string, nat NAT) *Server {
	n.t.Helper()
	s := n.addBehind(name, idx, false, nat)
	s.machine = true
	dir, err := os.MkdirTemp("", n.id+"-"+name+"-") // Sweep knows it by the prefix
	if err != nil {
		n.t.Fatal(err)
	}
	s.dir = dir
	n.onCleanup(func() { os.RemoveAll(dir) })
	s.cgroups = n.machineCgroups(name)
	s.startMachine(hostname)
	return s
}

// cgroupParents returns, for every cgroup hierarchy, the directory of this
// process's own cgroup there: machines' cgroups go under it.
func cgroupParents() []string {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(self)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		mount := "/sys/fs/cgroup/" + strings.TrimPrefix(f[1], "name=")
		if f[1] == "" {
			mount = "/sys/fs/cgroup/unified"
		}
		if _, err := os.Stat(mount); err == nil {
			dirs = append(dirs, filepath.Join(mount, f[2]))
		}
	}
	return dirs
}

// sweepMachines removes the cgroups and directories of machines whose
// test process is gone (killed before its cleanup ran); their processes
// went with their network namespaces.
func sweepMachines() {
	var stale []string
	for _, parent := range cgroupParents() {
		m, _ := filepath.Glob(filepath.Join(parent, Prefix+"*"))
		stale = append(stale, m...)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	for _, d := range append(stale, dirs...) {
		rest := strings.TrimPrefix(filepath.Base(d), Prefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its test is still running
		}
		if strings.HasPrefix(d, "/sys/fs/cgroup/") {
			removeCgroupTree(d)
		} else {
			os.RemoveAll(d)
		}
	}
}

// machineCgroups makes the machine's cgroup in every hierarchy, under the
// test's own cgroup there, and returns their directories. They are removed,
// deepest first, when the test ends (after the machine's processes).
func (n *Net) machineCgroups(name string) []string {
	n.t.Helper()
	var dirs []string
	for _, parent := range cgroupParents() {
		dir := filepath.Join(parent, n.id+"-"+name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			n.t.Fatalf("creating cgroup %s: %v", dir, err)
		}
		if strings.HasPrefix(dir, "/sys/fs/cgroup/cpuset/") {
			// A v1 cpuset takes tasks only once it has cpus and mems.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				os.WriteFile(filepath.Join(dir, f), v, 0o644)
			}
		}
		dirs = append(dirs, dir)
		n.onCleanup(func() { removeCgroupTree(dir) })
	}
	if len(dirs) == 0 {
		n.t.Fatal("no cgroup hierarchy found under /sys/fs/cgroup")
	}
	return dirs
}

// removeCgroupTree removes a cgroup and its children, deepest first; the
// processes in them must be gone (it waits a little for their exit).
func removeCgroupTree(dir string) {
	var all []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			all = append(all, p)
		}
		return nil
	})
	for i := len(all) - 1; i >= 0; i-- {
		Eventually(10*time.Second, func() bool {
			err := syscall.Rmdir(all[i])
			return err == nil || os.IsNotExist(err)
		})
	}
}

// startMachine starts the machine's init: it joins the machine's cgroups,
// then unshares the namespaces and sets the machine up (inner script), and
// sleeps as pid 1 until the test kills it.
func (s *Server) startMachine(hostname string) {
	t := s.net.t
	tunables := filepath.Join(s.dir, "tunables")
	var inner strings.Builder
	fmt.Fprintf(&inner, "set -e\nhostname %s\nmount --make-rshared /\n", hostname)
	inner.WriteString("mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/wgk3s /run/wireguard /run/netns\n")
	for _, b := range machineBinds {
		src := filepath.Join(s.dir, "fs", b)
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&inner, "mkdir -p %s\nmount --bind %s %s\n", b, src, b)
	}
	inner.WriteString("mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup\n")
	for _, dir := range s.cgroups {
		h := filepath.Base(strings.SplitN(strings.TrimPrefix(dir, "/sys/fs/cgroup/"), "/", 2)[0])
		switch h {
		case "unified":
			inner.WriteString("mkdir /sys/fs/cgroup/unified\nmount -t cgroup2 cgroup2 /sys/fs/cgroup/unified\n")
		case "systemd":
			inner.WriteString("mkdir /sys/fs/cgroup/systemd\nmount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd\n")
		default:
			fmt.Fprintf(&inner, "mkdir /sys/fs/cgroup/%s\nmount -t cgroup -o %s cgroup /sys/fs/cgroup/%s\n", h, h, h)
		}
	}
	if err := os.MkdirAll(tunables, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/proc/sys/kernel", "/proc/sys/vm", "/proc/sys/fs", "/sys/module"} {
		fmt.Fprintf(&inner, "mount --bind %s %s\nmount -o remount,bind,ro %s\n", d, d, d)
	}
	for key, v := range kubeletTunables {
		f := filepath.Join(tunables, strings.ReplaceAll(key, "/", "."))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&inner, "mount --bind %s /proc/sys/%s\n", f, key)
	}
	inner.WriteString("echo ready\nexec sleep 86400\n")

	var outer strings.Builder
	outer.WriteString("set -e\n")
	for _, dir := range s.cgroups {
		fmt.Fprintf(&outer, "echo $$ > %s/cgroup.procs\n", dir)
	}
	// ip netns exec mounts a sysfs of the network namespace, without the
	// cgroup hierarchies: the cgroups are joined before it.
	fmt.Fprintf(&outer, `exec ip netns exec %s unshare --mount --uts --pid --fork --kill-child=SIGKILL --cgroup --mount-proc --propagation private sh -c "$INNER"`+"\n", s.NS)
	cmd := exec.Command("sh", "-c", outer.String())
	cmd.Env = append(os.Environ(), "INNER="+inner.String())
	s.net.onCleanup(func() {
		if s.init > 0 {
			syscall.Kill(s.init, syscall.SIGKILL) // the pid namespace ends with it
		}
		if cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		// Every process of the machine is gone with its pid namespace; wait
		// for the kernel to have reaped them before the cgroups go.
		for _, dir := range s.cgroups {
			Eventually(20*time.Second, func() bool {
				b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				return len(strings.TrimSpace(string(b))) == 0
			})
		}
	})
	s.holder = startReady(t, cmd, "the machine "+s.Name, 20*time.Second)
	// Its init is unshare's child: pid 1 of the machine (sh execs ip,
	// which execs unshare: the same process).
	if !Eventually(10*time.Second, func() bool {
		kids := ChildPids(cmd.Process.Pid)
		if len(kids) == 1 {
			s.init = kids[0]
		}
		return s.init > 0
	}) {
		t.Fatalf("the machine %s has no init", s.Name)
	}
}

// ChildPids lists pid's children (every thread's).
func ChildPids(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(field); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
