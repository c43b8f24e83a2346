//go:build linux

package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// running reports whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// processesOf returns the live processes whose executable is bin.
func processesOf(bin string) []int {
	var out []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		var pid int
		if _, err := fmt.Sscan(d.Name(), &pid); err != nil {
			continue
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe == bin && running(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// setgidStandin copies the stand-in k3s into a setgid binary of another
// group. Exec'ing it changes the effective gid, and the kernel then clears
// the parent-death signal, exactly as it does for the SELinux domain
// transition k3s-selinux causes (unconfined_service_t -> container_runtime_t).
func setgidStandin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "k3s")
	src, err := os.Open(k3sBin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	if err := os.Chown(bin, 0, 65534); err != nil { // nogroup
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o755|os.ModeSetgid); err != nil { // after chown, which clears setgid
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(bin), 0o755)
	return bin
}

// TestOrphanedK3sIsStopped: when the parent-death signal cannot reach k3s
// (SELinux), a SIGKILLed appliance leaves k3s running; the next start, and
// `appliance cleanup`, must stop it, so that exactly one k3s runs.
func TestOrphanedK3sIsStopped(t *testing.T) {
	testnet.Requirements(t)
	bin := setgidStandin(t)
	net := testnet.New(t)
	b := bins()
	b.K3s = bin
	m := testnet.NewNode(t, net.AddServer("master", 1), b, "k3s-master", "master", "192.168.2.1")
	m.WriteConfig([]*node{m}, nil)

	// orphan starts the appliance, waits for its k3s, SIGKILLs the
	// appliance and returns the k3s it left running.
	orphan := func(t *testing.T) int {
		t.Helper()
		m.Start(t)
		var pid int
		if !testnet.Eventually(10*time.Second, func() bool { pid = k3sPID(m); return pid > 0 && running(pid) }) {
			t.Fatalf("no k3s started:\n%s", m.Proc.Output())
		}
		// Once it has said all it says at start: a write into the dead
		// appliance's pipe would kill it with SIGPIPE, which is not what
		// this test is about.
		if !m.Proc.WaitOutput("listening on 192.168.2.1:6443", 10*time.Second) {
			t.Fatalf("the stand-in did not listen:\n%s", m.Proc.Output())
		}
		m.Proc.Signal(syscall.SIGKILL)
		m.Proc.Wait(10 * time.Second)
		// The reproduction holds only if the kernel cleared the signal.
		if testnet.Eventually(time.Second, func() bool { return !running(pid) }) {
			t.Fatalf("k3s %d died with the appliance: the setgid stand-in did not clear the parent-death signal here", pid)
		}
		return pid
	}

	t.Run("appliance cleanup stops the orphan", func(t *testing.T) {
		old := orphan(t)
		out := m.Srv.Run(applianceBin, "cleanup", "--config", configPath)
		if running(old) {
			t.Fatalf("k3s %d still runs after cleanup:\n%s", old, out)
		}
		if !strings.Contains(out, "stopped the k3s an earlier run left") {
			t.Errorf("cleanup did not say it stopped k3s:\n%s", out)
		}
		if got := processesOf(bin); len(got) != 0 {
			t.Errorf("k3s processes after cleanup: %v", got)
		}
	})
	t.Run("the next start stops the orphan; one k3s runs", func(t *testing.T) {
		old := orphan(t)
		m.Start(t)
		if running(old) {
			t.Fatalf("the orphan k3s %d still runs after a new start:\n%s", old, m.Proc.Output())
		}
		var now []int
		if !testnet.Eventually(10*time.Second, func() bool { now = processesOf(bin); return len(now) == 1 && now[0] != old }) {
			t.Fatalf("k3s processes = %v, want exactly one new one:\n%s", now, m.Proc.Output())
		}
		if !strings.Contains(m.Proc.Output(), "stopping a k3s left running by an earlier appliance run") {
			t.Errorf("the start did not log the orphan:\n%s", m.Proc.Output())
		}
		m.Stop(t)
		if got := processesOf(bin); len(got) != 0 {
			t.Errorf("k3s processes after stop: %v", got)
		}
	})
}
