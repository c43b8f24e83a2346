//go:build linux

package kernelvm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cacheDir holds the downloaded kernel and its staged modules between runs.
func cacheDir() string {
	if d := os.Getenv("WGK3S_KERNEL_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/wgk3s-kernel-test"
}

func requirements(t *testing.T) {
	t.Helper()
	if os.Getenv("WGK3S_KERNEL_TEST") != "1" {
		t.Skip("boots a VM: run `make kernel-test` (or set WGK3S_KERNEL_TEST=1)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root (the VM's tests create network namespaces as root inside it; the cache is in /var/cache)")
	}
	for tool, pkg := range map[string]string{
		"qemu-system-x86_64": "qemu-system-x86", "depmod": "kmod", "apt-get": "apt",
		"dpkg-deb": "dpkg", "ldd": "libc-bin",
	} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install --no-install-recommends %s; make deps does it)", tool, pkg)
		}
	}
}

// inVM are the e2e tests the VM runs in kernel mode: the tunnel across the
// NATs (ping both ways, wg show, a reload that adds a peer under a ping
// flow, a rejected file, MTU and address changes, SIGTERM), the start after
// a SIGKILLed run, the lifecycle (status, reload, stop), the firewall, the
// mode choice of interface.mode auto, and a kernel node with a userspace
// one. (The firewall tests do not depend on the mode and take minutes
// under emulation; they run on the host.)
var inVM = []string{
	"TestTunnelAcrossNATs", "TestTunnelStartsAfterAKilledRun", "TestCleanupAfterAKilledRun",
	"TestLifecycle", "TestModeChoice", "TestKernelAndUserspacePeers",
}

// hostPrograms are what the e2e tests run inside the simulated servers,
// mirrored from this machine's Debian packages with their libraries.
var hostPrograms = []string{
	"sh", "bash", "env", "sleep", "mkdir", "rm", "cat", "ls", "readlink", "grep", "timeout", "mkfifo",
	"mount", "umount", "nsenter", "unshare", "sysctl", "ping", "ss",
	"ip", "bridge", "wg", "modprobe", "lsmod",
	"iptables", "iptables-save", "iptables-restore", "iptables-legacy", "iptables-legacy-save",
	"iptables-legacy-restore", "iptables-nft", "iptables-nft-save", "iptables-nft-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
}

// modules are loaded before the tests start; the rest load on demand
// (the kernel calls /sbin/modprobe).
var modules = []string{"wireguard", "tun", "veth", "bridge", "vxlan", "nf_tables", "nft_compat", "ip_tables", "iptable_nat", "iptable_filter"}

func TestKernelModeInVM(t *testing.T) {
	requirements(t)
	cache := cacheDir()
	start := time.Now()
	k, err := debianKernel(cache)
	if err != nil {
		t.Skipf("no Debian kernel package to boot: %v", err)
	}
	mods, err := stageModules(cache, k)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, modules staged in %s (%v)", k.Release, mods, time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	bins := buildBinaries(t, dir)
	im := newImage()
	// The top directories as the host has them (links to usr/ on a
	// merged-/usr system): programs are called by either path.
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64"} {
		if err := im.mirror(d); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	for _, p := range hostPrograms {
		if err := im.program(p); err != nil {
			t.Fatalf("putting %s in the VM: %v (make deps installs it)", p, err)
		}
	}
	// iptables loads its matches and targets as plugins ldd cannot see.
	for _, d := range []string{"/usr/lib/x86_64-linux-gnu/xtables"} {
		if err := im.mirror(d); err == nil {
			err = im.tree(d, d)
		}
		if err != nil {
			t.Fatalf("xtables plugins: %v", err)
		}
	}
	libModules, err := filepath.EvalSymlinks("/lib")
	if err != nil {
		t.Fatal(err)
	}
	if err := im.tree(filepath.Join(libModules, "modules"), filepath.Join(mods, "lib", "modules")); err != nil {
		t.Fatal(err)
	}
	for name, src := range bins {
		if err := im.file("vm/"+name, src); err != nil {
			t.Fatal(err)
		}
		if name != "init" {
			continue
		}
		if err := im.file("init", src); err != nil {
			t.Fatal(err)
		}
	}
	cmd := vmCommand{
		Args: []string{"/vm/e2e.test", "-test.v", "-test.count=1", "-test.timeout=20m",
			"-test.run", "^(" + strings.Join(inVM, "|") + ")$"},
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp",
			"WGK3S_E2E_APPLIANCE=/vm/appliance", "WGK3S_E2E_K3S=/vm/k3s", "WGK3S_E2E_MODES=kernel",
			"WGK3S_E2E_SLOW=1",
		},
		Modules: modules,
	}
	im.data("vm/command.json", cmd.json(), 0o644)
	initrd := filepath.Join(dir, "initrd.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(initrd)
	t.Logf("initramfs: %d files, %.1f MiB, ready after %v", len(im.entries), float64(fi.Size())/(1<<20), time.Since(start).Round(time.Millisecond))

	b := bootVM(t, k.vmlinuz(), initrd)
	t.Logf("VM (%s): init up after %v, done after %v", b.Accel, b.UpIn.Round(100*time.Millisecond), b.Total.Round(100*time.Millisecond))
	out := strings.Join(b.Lines, "\n")
	if b.Reason != "" {
		t.Fatalf("VM: %s", b.Reason)
	}
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

// bootVM boots the VM with KVM when /dev/kvm opens and the kernel comes up
// on it (WGK3S_VM_ACCEL=tcg or kvm forces one), else with TCG, QEMU's
// software emulation.
func bootVM(t *testing.T, kernel, initrd string) boot {
	t.Helper()
	accels := []string{"tcg"}
	switch a := os.Getenv("WGK3S_VM_ACCEL"); {
	case a != "":
		accels = []string{a}
	case kvmUsable():
		accels = []string{"kvm", "tcg"}
	}
	var b boot
	for i, accel := range accels {
		b = run(context.Background(), accel, kernel, initrd, 90*time.Second, 25*time.Minute, t.Logf)
		if b.UpIn > 0 || i == len(accels)-1 {
			break
		}
		t.Logf("the kernel did not come up with -accel %s (%s); trying %s", accel, b.Reason, accels[i+1])
	}
	return b
}

// buildBinaries builds what the VM runs, all static: its init, the
// appliance, the stand-in k3s and the e2e test binary.
func buildBinaries(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, args := range map[string][]string{
		"init":      {"build", "-o", "", "./internal/vminit"},
		"appliance": {"build", "-o", "", "./cmd/appliance"},
		"k3s":       {"build", "-o", "", "./internal/k3sstandin"},
		"e2e.test":  {"test", "-c", "-o", "", "./e2e"},
	} {
		bin := filepath.Join(dir, name)
		args[len(args)-2] = bin
		cmd := exec.Command("go", args...)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		out[name] = bin
	}
	return out
}
