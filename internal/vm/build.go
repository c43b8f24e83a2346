//go:build linux

package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CacheDir holds the downloaded kernel and its staged modules between
// runs: $WGK3S_KERNEL_TEST_CACHE, else /var/cache/wgk3s-kernel-test.
func CacheDir() string {
	if d := os.Getenv("WGK3S_KERNEL_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/wgk3s-kernel-test"
}

// Tools are the host programs an image needs to build and boot, with the
// Debian package of each.
var Tools = map[string]string{
	"qemu-system-x86_64": "qemu-system-x86", "depmod": "kmod", "apt-get": "apt",
	"dpkg-deb": "dpkg", "ldd": "libc-bin",
}

// MissingTool names the first of Tools this machine lacks and how to get
// it, or "".
func MissingTool() string {
	for tool, pkg := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs %s (apt-get install --no-install-recommends %s; make deps does it)", tool, pkg)
		}
	}
	return ""
}

// Programs are what the e2e tests and the benchmark run inside the
// simulated servers, mirrored from this machine's Debian packages with
// their libraries.
var Programs = []string{
	"sh", "bash", "env", "sleep", "mkdir", "rm", "cat", "ls", "readlink", "grep", "timeout", "mkfifo",
	"mount", "umount", "nsenter", "unshare", "sysctl", "ping", "ss", "iperf3",
	"ip", "bridge", "wg", "modprobe", "lsmod",
	"iptables", "iptables-save", "iptables-restore", "iptables-legacy", "iptables-legacy-save",
	"iptables-legacy-restore", "iptables-nft", "iptables-nft-save", "iptables-nft-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
}

// Modules are loaded before the command starts; the rest load on demand
// (the kernel calls /sbin/modprobe).
var Modules = []string{"wireguard", "tun", "veth", "bridge", "vxlan", "nf_tables", "nft_compat", "ip_tables", "iptable_nat", "iptable_filter"}

// Env is the command's environment unless it brings its own.
var Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp"}

// Build writes to out an initramfs that boots k: Programs, the kernel's
// networking modules, bins (name -> host path, each put at /vm/NAME; the
// one named "init" is also /init, and must be internal/vminit) and cmd.
func Build(cache string, k Kernel, bins map[string]string, cmd Command, out string) (files int, err error) {
	mods, err := stageModules(cache, k)
	if err != nil {
		return 0, err
	}
	im := NewImage()
	// The top directories as the host has them (links to usr/ on a
	// merged-/usr system): programs are called by either path.
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib64"} {
		if err := im.Mirror(d); err != nil && !os.IsNotExist(err) {
			return 0, err
		}
	}
	for _, p := range Programs {
		if err := im.Program(p); err != nil {
			return 0, fmt.Errorf("putting %s in the VM: %w (make deps installs it)", p, err)
		}
	}
	// iptables loads its matches and targets as plugins ldd cannot see.
	xt := "/usr/lib/x86_64-linux-gnu/xtables"
	if err := im.Mirror(xt); err != nil {
		return 0, fmt.Errorf("iptables plugins: %w", err)
	}
	if err := im.Tree(xt, xt); err != nil {
		return 0, err
	}
	lib, err := filepath.EvalSymlinks("/lib")
	if err != nil {
		return 0, err
	}
	if err := im.Tree(filepath.Join(lib, "modules"), filepath.Join(mods, "lib", "modules")); err != nil {
		return 0, err
	}
	if _, ok := bins["init"]; !ok {
		return 0, fmt.Errorf("no init among %v", bins)
	}
	for name, src := range bins {
		if err := im.File("vm/"+name, src); err != nil {
			return 0, err
		}
		if name == "init" {
			im.File("init", src)
		} else if err := im.libraries(src); err != nil {
			return 0, err
		}
	}
	if cmd.Env == nil {
		cmd.Env = Env
	}
	if cmd.Modules == nil {
		cmd.Modules = Modules
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	im.Data("vm/command.json", b, 0o644)
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	if err := im.Write(f); err != nil {
		f.Close()
		return 0, fmt.Errorf("writing %s: %w", out, err)
	}
	return len(im.entries), f.Close()
}

// GoBuild builds the static binaries a VM runs, from the module at root:
// name -> ["build" or "test", package]; it returns name -> path in dir.
// The VM's init is always among them.
func GoBuild(root, dir string, pkgs map[string][2]string) (map[string]string, error) {
	all := map[string][2]string{"init": {"build", "./internal/vminit"}}
	for k, v := range pkgs {
		all[k] = v
	}
	out := map[string]string{}
	for name, p := range all {
		bin := filepath.Join(dir, name)
		args := []string{"build", "-o", bin, p[1]}
		if p[0] == "test" {
			args = []string{"test", "-c", "-o", bin, p[1]}
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		out[name] = bin
	}
	return out, nil
}
