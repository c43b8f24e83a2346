//go:build linux

// Package vm boots Debian's own kernel (which has wireguard.ko, unlike the
// build machines') under QEMU to run the appliance's checks of kernel
// WireGuard for real. The VM's root file system is an initramfs made of
// this machine's Debian binaries and their libraries, the kernel's
// networking modules and the programs under test; its init
// (internal/vminit) runs one command and powers off. The VM has no network
// device: the serial console is its only way out, and the command's exit
// code comes back on it. e2e/kernelvm (`make kernel-test`) and the
// benchmark's kernel section use it.
package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Command is what the VM's init (internal/vminit) reads from
// /vm/command.json: the command to run, its environment, and the modules
// to load first.
type Command struct {
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Modules []string `json:"modules"`
}

// Boot is one run of the VM.
type Boot struct {
	Accel  string // kvm or tcg
	Lines  []string
	Exit   int           // the command's exit code; -1 if the VM never said
	UpIn   time.Duration // from QEMU's start to init's first line
	Total  time.Duration // from QEMU's start to its exit
	Reason string        // why the run ended early, if it did
}

var exitRE = regexp.MustCompile(`^wgk3s-vm: exit (-?\d+)`)

// Run boots kernel with initrd, with KVM when /dev/kvm opens and the
// kernel comes up on it ($WGK3S_VM_ACCEL=tcg or kvm forces one), else with
// TCG, QEMU's software emulation. It waits up to 90 s for init's first
// line and total in all; each console line goes to logf as it arrives.
func Run(ctx context.Context, kernel, initrd string, total time.Duration, logf func(string, ...any)) Boot {
	accels := []string{"tcg"}
	switch a := os.Getenv("WGK3S_VM_ACCEL"); {
	case a != "":
		accels = []string{a}
	case kvmUsable():
		accels = []string{"kvm", "tcg"}
	}
	var b Boot
	for i, accel := range accels {
		b = boot(ctx, accel, kernel, initrd, 90*time.Second, total, logf)
		if b.UpIn > 0 || i == len(accels)-1 {
			break
		}
		logf("the kernel did not come up with -accel %s (%s); trying %s", accel, b.Reason, accels[i+1])
	}
	return b
}

// Output is the console's text.
func (b Boot) Output() string { return strings.Join(b.Lines, "\n") }

// boot boots kernel with initrd under QEMU with accel and waits for init
// to say the command's exit code, at most upWithin for init's first line
// and total in all.
func boot(ctx context.Context, accel, kernel, initrd string, upWithin, total time.Duration, logf func(string, ...any)) Boot {
	b := Boot{Accel: accel, Exit: -1}
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	args := []string{
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
		"-nic", "none", // nothing leaves the VM but the console
		"-serial", "stdio", "-monitor", "none",
		"-m", "3072", "-smp", "2",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off",
	}
	if accel == "kvm" {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Reason = err.Error()
		return b
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Reason = err.Error()
		return b
	}
	up := make(chan struct{})
	var once sync.Once
	late := make(chan string, 1)
	go func() {
		select {
		case <-up:
		case <-time.After(upWithin):
			late <- fmt.Sprintf("init did not start within %v", upWithin)
			cancel()
		case <-ctx.Done():
		}
	}()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		b.Lines = append(b.Lines, line)
		logf("vm: %s", line)
		if strings.HasPrefix(line, "wgk3s-vm: up") {
			once.Do(func() { b.UpIn = time.Since(start); close(up) })
		}
		if m := exitRE.FindStringSubmatch(line); m != nil {
			b.Exit, _ = strconv.Atoi(m[1])
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	b.Total = time.Since(start)
	once.Do(func() { close(up) })
	select {
	case b.Reason = <-late:
	default:
	}
	if b.Reason == "" && ctx.Err() != nil {
		b.Reason = fmt.Sprintf("the VM did not finish within %v", total)
	}
	if b.Reason == "" && b.Exit < 0 {
		b.Reason = fmt.Sprintf("QEMU exited (%v) without the command's exit code", err)
	}
	return b
}

// kvmUsable says whether /dev/kvm can be opened; whether a stock kernel
// boots on it is only known by trying (on some paravirtual hosts it
// cannot).
func kvmUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
