//go:build linux

// Command vminit is pid 1 of the virtual machine `make kernel-test` boots
// (e2e/kernelvm): it mounts the kernel's file systems, loads the modules the
// tests need, runs the command the host wrote to /vm/command.json with the
// console as its output, prints "wgk3s-vm: exit N" and powers the machine
// off. The VM has no network device; the console is its only way out.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/vm"
	"golang.org/x/sys/unix"
)

func main() {
	code := run()
	fmt.Printf("wgk3s-vm: exit %d\n", code)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Reboot returns only on failure; pid 1 must not exit.
	for {
		time.Sleep(time.Hour)
	}
}

func run() int {
	if err := mountAll(); err != nil {
		fmt.Println("wgk3s-vm:", err)
		return 100
	}
	// The kernel may start init without a console: open it now.
	if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd < 3; fd++ {
			unix.Dup3(int(c.Fd()), fd, 0)
		}
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Printf("wgk3s-vm: up, kernel %s\n", unix.ByteSliceToString(uts.Release[:]))

	raw, err := os.ReadFile("/vm/command.json")
	if err != nil {
		fmt.Println("wgk3s-vm:", err)
		return 101
	}
	var c vm.Command
	if err := json.Unmarshal(raw, &c); err != nil || len(c.Args) == 0 {
		fmt.Printf("wgk3s-vm: /vm/command.json: %v (args %q)\n", err, c.Args)
		return 101
	}
	if len(c.Modules) > 0 {
		out, err := exec.Command("/sbin/modprobe", append([]string{"-a"}, c.Modules...)...).CombinedOutput()
		if err != nil {
			fmt.Printf("wgk3s-vm: modprobe %s: %v\n%s", strings.Join(c.Modules, " "), err, out)
			return 102
		}
	}
	return runReaping(c)
}

// runReaping starts the command and reaps every process that ends until
// the command itself does: as pid 1, this process inherits every orphan.
func runReaping(c vm.Command) int {
	cmd := exec.Command(c.Args[0], c.Args[1:]...)
	cmd.Env = c.Env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Println("wgk3s-vm:", err)
		return 103
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Println("wgk3s-vm: wait:", err)
			return 104
		}
		if pid != cmd.Process.Pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

func mountAll() error {
	for _, m := range []struct{ fs, dir, opts string }{
		{"proc", "/proc", ""},
		{"sysfs", "/sys", ""},
		{"devtmpfs", "/dev", "mode=0755"},
		{"devpts", "/dev/pts", "mode=0620,ptmxmode=0666"},
		{"tmpfs", "/run", "mode=0755"},
		{"tmpfs", "/tmp", "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", ""},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, m.opts); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fs, m.dir, err)
		}
	}
	// What a distribution's early boot sets up and the tools expect.
	for link, target := range map[string]string{
		"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2",
	} {
		os.Symlink(target, link)
	}
	return os.WriteFile("/proc/sys/kernel/modprobe", []byte("/sbin/modprobe\n"), 0o644)
}
