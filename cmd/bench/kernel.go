//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/internal/vm"
)

const kernelSection = "Kernel WireGuard against userspace"

// kernelModes measures the appliance in kernel mode beside userspace mode
// on the same kernel. Where this kernel has no WireGuard, it boots
// Debian's kernel in a VM (internal/vm) and runs this section there.
func (b *bench) kernelModes() {
	if why := testnet.KernelWireGuardMissing(); why != "" {
		b.kernelInVM(why)
		return
	}
	where := "this kernel"
	if b.o.inVM != "" {
		where = "in the VM (" + b.o.inVM + ")"
	}
	var t [2]tput
	for i, mode := range []string{"userspace", "kernel"} {
		b.a.Bin.Mode, b.b.Bin.Mode = mode, mode
		b.startAppliances()
		// In kernel mode the kernel does the work: no process's CPU time
		// is the tunnel's, so only throughput and the appliance's RSS count.
		t[i] = b.measure(mode, b.a.Address, nil)
		for _, n := range []*testnet.Node{b.a, b.b} {
			_, hwm := rssKiB(n.Proc.Pid())
			t[i].peakRSSKB = max(t[i].peakRSSKB, hwm)
		}
		b.stopAppliances()
	}
	b.a.Bin.Mode, b.b.Bin.Mode = "userspace", "userspace"
	for i, streams := range []string{"1 stream", "4 streams"} {
		b.add(kernelSection, "appliance, kernel wg0, "+streams, mbit(t[1].bps[i]), where)
		b.add(kernelSection, "appliance, userspace wg0, "+streams, mbit(t[0].bps[i]), where)
		b.add(kernelSection, "kernel/userspace, "+streams, ratio(t[1].bps[i], t[0].bps[i]), where)
	}
	b.add(kernelSection, "appliance peak RSS under load, kernel wg0", mib(t[1].peakRSSKB), where+"; the data path is the kernel's")
	b.add(kernelSection, "appliance peak RSS under load, userspace wg0", mib(t[0].peakRSSKB), where)
}

// kernelInVM runs the kernel section inside a VM booted from Debian's
// kernel package and takes its rows from the console.
func (b *bench) kernelInVM(why string) {
	skip := func(reason string) {
		b.add(kernelSection, "not measured", "n/a", reason)
	}
	if missing := vm.MissingTool(); missing != "" {
		skip(why + "; a VM " + missing)
		return
	}
	cache := vm.CacheDir()
	k, err := vm.DebianKernel(cache)
	if err != nil {
		skip(fmt.Sprintf("%s; no Debian kernel package for a VM: %v", why, err))
		return
	}
	root, err := moduleRoot()
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "wgk3s-bench-vm-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bins, err := vm.GoBuild(root, dir, map[string][2]string{
		"appliance": {"build", "./cmd/appliance"},
		"k3s":       {"build", "./internal/k3sstandin"},
		"bench":     {"build", "./cmd/bench"},
	})
	if err != nil {
		b.Fatal(err)
	}
	args := []string{"/vm/bench", "--only", "kernel", "--rows", "--out", "/tmp/BENCHMARKS.md",
		"--appliance", "/vm/appliance", "--k3s-standin", "/vm/k3s", "--wireguard-go", "/vm/none",
		"--in-vm", "Debian " + k.Release + ", 2 vCPUs"}
	if b.o.smoke {
		args = append(args, "--smoke")
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if _, err := vm.Build(cache, k, bins, vm.Command{Args: args}, initrd); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("  booting Debian's kernel %s in a VM: %s\n", k.Release, why)
	boot := vm.Run(context.Background(), k.Vmlinuz(), initrd, 20*time.Minute, func(string, ...any) {})
	if boot.Reason != "" || boot.Exit != 0 {
		b.Fatalf("the VM's benchmark failed (%s, exit %d):\n%s", boot.Reason, boot.Exit, boot.Output())
	}
	accel := "KVM"
	if boot.Accel == "tcg" {
		accel = "emulated (QEMU TCG)"
	}
	rows := 0
	for _, line := range boot.Lines {
		f := strings.Split(strings.TrimPrefix(line, rowPrefix), "\t")
		if !strings.HasPrefix(line, rowPrefix) || len(f) != 4 {
			continue
		}
		detail := f[3]
		detail = strings.Replace(detail, "in the VM (", "in the VM ("+accel+", ", 1)
		b.add(f[0], f[1], f[2], detail)
		rows++
	}
	if rows == 0 {
		b.Fatalf("the VM's benchmark printed no rows:\n%s", boot.Output())
	}
}

// rowPrefix starts each result line `bench --rows` prints, for a bench
// outside the VM to read from the console.
const rowPrefix = "wgk3s-bench-row\t"

// moduleRoot is the directory of this source tree's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("the kernel section builds the VM's programs: run bench from the source tree (go env GOMOD: %q, %v)", gomod, err)
	}
	return filepath.Dir(gomod), nil
}
