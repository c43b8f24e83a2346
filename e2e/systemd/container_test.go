//go:build linux

package systemd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
	"github.com/wgk3s/wgk3s/internal/testnet"
)

// cacheDir keeps the rootfs between runs; the test owns it.
const cacheDir = "/var/cache/wgk3s-systemd-test"

// rootfsPackages is Debian 12 minbase plus what a booted systemd and the
// test's own checks need. iptables is there because the package depends on
// it and the containers have no way to the archive. No procps: a minimal
// system has no /bin/kill, and ExecReload must not need one.
var rootfsPackages = []string{"systemd", "systemd-sysv", "dbus", "iptables", "iproute2", "iputils-ping"}

// rootfs returns the cached rootfs tarball, built with mmdebstrap when
// missing (about 30 s to 2 min).
func rootfs(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte("bookworm minbase " + strings.Join(rootfsPackages, ",")))
	tar := filepath.Join(cacheDir, "rootfs-"+hex.EncodeToString(sum[:6])+".tar")
	if _, err := os.Stat(tar); err == nil {
		return tar
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tmp := strings.TrimSuffix(tar, ".tar") + ".partial.tar" // mmdebstrap picks the format by the extension
	out, err := exec.CommandContext(ctx, "mmdebstrap", "--variant=minbase", "--include="+strings.Join(rootfsPackages, ","), "bookworm", tmp).CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, tar); err != nil {
		t.Fatal(err)
	}
	return tar
}

// container is one Debian booted by systemd-nspawn inside a server's
// network namespace of the simulated clouds.
type container struct {
	t    *testing.T
	name string
	dir  string // its root directory
	srv  *testnet.Server

	mu     sync.Mutex
	nspawn *exec.Cmd
	exited chan struct{}
	log    bytes.Buffer
	init   int // the container's systemd, as seen from here
}

func newContainer(t *testing.T, tar string, srv *testnet.Server, name string) *container {
	t.Helper()
	c := &container{t: t, name: name, dir: filepath.Join(t.TempDir(), name), srv: srv}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-C", c.dir, "-xf", tar).CombinedOutput(); err != nil {
		t.Fatalf("unpacking the rootfs: %v\n%s", err, out)
	}
	t.Cleanup(c.kill)
	return c
}

// boot starts the container and waits until its systemd has booted.
func (c *container) boot() {
	c.t.Helper()
	cmd := exec.Command("systemd-nspawn", "-D", c.dir, "--boot", "--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/"+c.srv.NS, "--bind=/dev/net/tun", "--capability=CAP_NET_ADMIN",
		"-M", c.name)
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network")
	cmd.Stdout, cmd.Stderr = &syncWriter{c: c}, &syncWriter{c: c}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("systemd-nspawn: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	c.mu.Lock()
	c.nspawn, c.exited, c.init = cmd, exited, 0
	c.mu.Unlock()
	if !poll.Until(30*time.Second, func() bool { c.init = containerInit(cmd.Process.Pid); return c.init > 0 }) {
		c.t.Fatalf("%s: no init process:\n%s", c.name, c.output())
	}
	var state string
	if !poll.Until(90*time.Second, func() bool {
		state, _ = c.try("systemctl", "is-system-running")
		state = strings.TrimSpace(state)
		return state == "running" || state == "degraded"
	}) {
		c.t.Fatalf("%s did not boot (state %q):\n%s", c.name, state, c.output())
	}
}

// waitExit waits for the container to end by itself (a reboot from inside).
func (c *container) waitExit(timeout time.Duration) bool {
	c.mu.Lock()
	exited := c.exited
	c.mu.Unlock()
	select {
	case <-exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// kill ends the container on every exit path of the test.
func (c *container) kill() {
	c.mu.Lock()
	cmd, exited := c.nspawn, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM) // nspawn shuts the container down
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

func (c *container) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

type syncWriter struct{ c *container }

func (w *syncWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.log.Write(p)
}

// containerInit returns the container's init among the descendants of
// nspawn: the process that is pid 1 in its own pid namespace and runs
// systemd, 0 until there is one. nspawn's first child is not it: nspawn
// forks an outer child that lives only until the container's init runs.
func containerInit(nspawn int) int {
	queue := []int{nspawn}
	for seen := 0; len(queue) > 0 && seen < 1000; seen++ {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range testnet.ChildPids(pid) {
			if isContainerInit(c) {
				return c
			}
			queue = append(queue, c)
		}
	}
	return 0
}

// isContainerInit: its NSpid (its pid in each pid namespace, outermost
// first) ends in 1, and it is systemd.
func isContainerInit(pid int) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "NSpid:" {
			return f[len(f)-1] == "1"
		}
	}
	return false
}

// try runs a command in the container (all its namespaces), with a limit.
func (c *container) try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append([]string{"-t", strconv.Itoa(c.init), "-a", "--", name}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", all...).CombinedOutput()
	return string(out), err
}

// run is try that fails the test.
func (c *container) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.try(name, args...)
	if err != nil {
		c.t.Fatalf("%s: %s %s: %v\n%s", c.name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// sh runs a shell command in the container.
func (c *container) sh(script string) string {
	c.t.Helper()
	return c.run("sh", "-c", script)
}

// write puts a file into the container's filesystem.
func (c *container) write(path string, data []byte, mode os.FileMode) {
	c.t.Helper()
	p := filepath.Join(c.dir, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		c.t.Fatal(err)
	}
	os.Chmod(p, mode)
}

func (c *container) read(path string) string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, path))
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

// show returns a property of the wgk3s unit.
func (c *container) show(prop string) string {
	return strings.TrimSpace(c.run("systemctl", "show", "-p", prop, "--value", "wgk3s.service"))
}
