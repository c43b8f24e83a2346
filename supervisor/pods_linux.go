package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// k3sContainerd is the address of the containerd k3s runs; its shims name
// it on their command line.
const k3sContainerd = "/run/k3s/containerd/containerd.sock"

// k3sMounts are where k3s, containerd and the kubelet mount what pods use.
var k3sMounts = []string{"/run/k3s/", "/var/lib/kubelet/pods/", "/var/lib/kubelet/plugins/", "/run/netns/cni-", "/var/lib/rancher/k3s/agent/containerd/"}

// k3sLinks are the interfaces flannel and its CNI make, with their kinds.
var k3sLinks = map[string]string{"cni0": "bridge", "flannel.1": "vxlan", "flannel-v6.1": "vxlan"}

// Leftovers says what StopPods removed.
type Leftovers struct {
	Processes int
	Mounts    int
	Links     []string
}

// StopPods removes what a stopped k3s leaves running on purpose, as k3s's
// k3s-killall.sh does: the pods (containerd's shims for k3s's containerd
// and every process under them), the mounts they used, and flannel's and
// the CNI bridge's interfaces. A stop of k3s keeps the pods running so
// that a restart does not restart them; this is for when the node stops
// for good (`appliance cleanup --all`, a package erase).
func StopPods() (Leftovers, error) {
	var l Leftovers
	procs := processes()
	var shims []int
	for pid, p := range procs {
		if strings.Contains(filepath.Base(p.argv0), "containerd-shim") && strings.Contains(p.cmdline, k3sContainerd) {
			shims = append(shims, pid)
		}
	}
	// The pods first, then their shims, so that no shim restarts anything.
	var victims []int
	for _, s := range shims {
		victims = append(victims, descendants(procs, s)...)
	}
	victims = append(victims, shims...)
	for _, pid := range victims {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			l.Processes++
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range victims {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	var errs []error
	mounts, err := mountPoints()
	if err != nil {
		errs = append(errs, err)
	}
	// Deepest first.
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if !slices.ContainsFunc(k3sMounts, func(p string) bool { return strings.HasPrefix(m, p) }) {
			continue
		}
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
			continue
		}
		l.Mounts++
		if strings.HasPrefix(m, "/run/netns/cni-") {
			os.Remove(m)
		}
	}
	for name, kind := range k3sLinks {
		link, err := netlink.LinkByName(name)
		if err != nil || link.Type() != kind {
			continue // gone, or not k3s's
		}
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", name, err))
			continue
		}
		l.Links = append(l.Links, name)
	}
	return l, errors.Join(errs...)
}

type proc struct {
	ppid           int
	argv0, cmdline string
}

func processes() map[int]proc {
	out := map[int]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		argv := strings.Split(string(cmd), "\x00")
		out[pid] = proc{ppid: ppid, argv0: argv[0], cmdline: strings.Join(argv, " ")}
	}
	return out
}

// descendants returns every process under pid, children before parents'
// siblings' children (any order is fine for SIGKILL).
func descendants(procs map[int]proc, pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for p, pr := range procs {
			if pr.ppid == parent {
				out = append(out, p)
				queue = append(queue, p)
			}
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// mountPoints lists this mount namespace's mount points.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			out = append(out, unescapeMount(fields[4]))
		}
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
