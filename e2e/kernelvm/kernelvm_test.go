//go:build linux

// Package kernelvm runs the end-to-end checks of kernel WireGuard for real,
// in a VM whose kernel has the module (internal/vm): Debian's own kernel
// under QEMU, the e2e suite in kernel mode inside. `make kernel-test` runs
// it (WGK3S_KERNEL_TEST=1); elsewhere it skips.
package kernelvm

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/vm"
)

// inVM are the e2e tests the VM runs in kernel mode: the tunnel across the
// NATs (ping both ways, wg show, a reload that adds a peer under a ping
// flow, a rejected file, MTU and address changes, SIGTERM), the start after
// a SIGKILLed run and the cleanup of one, the lifecycle (status, queued
// reloads, SIGTERM removing wg0, the rules and k3s), the mode choice of
// interface.mode auto, and a kernel node with a userspace one. (The
// firewall tests do not depend on the mode and take minutes under
// emulation; they run on the host.)
var inVM = []string{
	"TestTunnelAcrossNATs", "TestTunnelStartsAfterAKilledRun", "TestCleanupAfterAKilledRun",
	"TestLifecycle", "TestModeChoice", "TestKernelAndUserspacePeers",
}

func TestKernelModeInVM(t *testing.T) {
	if os.Getenv("WGK3S_KERNEL_TEST") != "1" {
		t.Skip("boots a VM: run `make kernel-test` (or set WGK3S_KERNEL_TEST=1)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root (the kernel cache is in /var/cache, and apt-get download)")
	}
	if why := vm.MissingTool(); why != "" {
		t.Skip(why)
	}
	start := time.Now()
	cache := vm.CacheDir()
	k, err := vm.DebianKernel(cache)
	if err != nil {
		t.Skipf("no Debian kernel package to boot: %v", err)
	}
	dir := t.TempDir()
	bins, err := vm.GoBuild("../..", dir, map[string][2]string{
		"appliance": {"build", "./cmd/appliance"},
		"k3s":       {"build", "./internal/k3sstandin"},
		"e2e.test":  {"test", "./e2e"},
	})
	if err != nil {
		t.Fatal(err)
	}
	env := slices.Concat(vm.Env, []string{"WGK3S_E2E_APPLIANCE=/vm/appliance", "WGK3S_E2E_K3S=/vm/k3s", "WGK3S_E2E_MODES=kernel"})
	cmd := vm.Command{
		Args: []string{"/vm/e2e.test", "-test.v", "-test.count=1", "-test.timeout=20m",
			"-test.run", "^(" + strings.Join(inVM, "|") + ")$"},
		Env: env,
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	files, err := vm.Build(cache, k, bins, cmd, initrd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s; initramfs of %d files ready after %v", k.Release, files, time.Since(start).Round(time.Millisecond))

	b := vm.Run(context.Background(), k.Vmlinuz(), initrd, 25*time.Minute, t.Logf)
	t.Logf("VM (%s): init up after %v, done after %v", b.Accel, b.UpIn.Round(100*time.Millisecond), b.Total.Round(100*time.Millisecond))
	if b.Reason != "" {
		t.Fatalf("VM: %s", b.Reason)
	}
	out := b.Output()
	if !strings.Contains(out, "=== e2e: the suite with interface.mode kernel") {
		t.Fatal("the e2e suite did not run in kernel mode inside the VM")
	}
	for _, name := range inVM {
		if !strings.Contains(out, "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass inside the VM", name)
		}
	}
	for _, bad := range []string{"--- SKIP", "--- FAIL"} {
		if strings.Contains(out, bad) {
			t.Errorf("inside the VM a test reports %q", bad)
		}
	}
	if b.Exit != 0 {
		t.Errorf("the e2e test binary exited %d inside the VM", b.Exit)
	}
}
