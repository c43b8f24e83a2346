//go:build linux

package vm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// Kernel is a Debian kernel package unpacked in the cache.
type Kernel struct {
	Package string // linux-image-6.1.0-56-amd64
	Release string // 6.1.0-56-amd64
	Root    string // where the package is unpacked
}

func (k Kernel) Vmlinuz() string { return filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release) }
func (k Kernel) modules() string { return filepath.Join(k.Root, "lib", "modules", k.Release) }

// DebianKernel returns the kernel package linux-image-amd64 depends on,
// downloaded (apt-get download: nothing is installed on this machine) and
// unpacked into cache on first use.
func DebianKernel(cache string) (Kernel, error) {
	pkg, err := kernelPackage()
	if err != nil {
		return Kernel{}, err
	}
	k := Kernel{Package: pkg, Release: strings.TrimPrefix(pkg, "linux-image-"), Root: filepath.Join(cache, pkg)}
	if _, err := os.Stat(k.Vmlinuz()); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return k, err
	}
	dl := exec.Command("apt-get", "download", "-q", pkg)
	dl.Dir = cache
	if out, err := dl.CombinedOutput(); err != nil {
		return k, fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
	if len(debs) != 1 {
		return k, fmt.Errorf("apt-get download %s left %d packages in %s", pkg, len(debs), cache)
	}
	defer os.Remove(debs[0])
	tmp := k.Root + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return k, fmt.Errorf("dpkg-deb -x %s: %v\n%s", debs[0], err, out)
	}
	if err := os.Rename(tmp, k.Root); err != nil {
		return k, err
	}
	if _, err := os.Stat(k.Vmlinuz()); err != nil {
		return k, fmt.Errorf("%s has no kernel image: %w", pkg, err)
	}
	return k, nil
}

var dependsRE = regexp.MustCompile(`(?m)^\s*Depends: (linux-image-[0-9][^\s]*)$`)

// kernelPackage asks apt which versioned package linux-image-amd64 is
// today, updating the package lists once if they do not know.
func kernelPackage() (string, error) {
	ask := func() string {
		out, _ := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
		if m := dependsRE.FindSubmatch(out); m != nil {
			return string(m[1])
		}
		return ""
	}
	if pkg := ask(); pkg != "" {
		return pkg, nil
	}
	if out, err := exec.Command("apt-get", "update", "-q").CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get update: %v\n%s", err, out)
	}
	if pkg := ask(); pkg != "" {
		return pkg, nil
	}
	return "", errors.New("apt-cache does not know linux-image-amd64")
}

// moduleTrees are the parts of the kernel's module tree the VM gets:
// networking (WireGuard, veth, bridge, VXLAN, netfilter) and the crypto
// and library modules they load by name, not through modules.dep (nf_tables
// needs crc32c). Everything else (drivers for hardware, file systems,
// sound) stays out.
var moduleTrees = []string{
	"kernel/net", "kernel/crypto", "kernel/lib", "kernel/arch",
	"kernel/drivers/net/wireguard", "kernel/drivers/net/veth.ko", "kernel/drivers/net/tun.ko",
	"kernel/drivers/net/vxlan", "kernel/drivers/net/vxlan.ko", "kernel/drivers/net/dummy.ko",
	"kernel/drivers/net/macvlan.ko", "kernel/drivers/net/ipvlan",
}

// stageModules copies moduleTrees of k into cache/<package>-vm/lib/modules
// and runs depmod there, once; it returns that root.
func stageModules(cache string, k Kernel) (string, error) {
	root := filepath.Join(cache, k.Package+"-vm")
	done := filepath.Join(root, "lib", "modules", k.Release, "modules.dep")
	if _, err := os.Stat(done); err == nil {
		return root, nil
	}
	os.RemoveAll(root)
	dst := filepath.Join(root, "lib", "modules", k.Release)
	for _, tree := range append(moduleTrees, "modules.order", "modules.builtin", "modules.builtin.modinfo") {
		src := filepath.Join(k.modules(), tree)
		if _, err := os.Stat(src); err != nil {
			continue // not in every kernel version
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, tree)), 0o755); err != nil {
			return "", err
		}
		if out, err := exec.Command("cp", "-a", src, filepath.Join(dst, tree)).CombinedOutput(); err != nil {
			return "", fmt.Errorf("cp %s: %v\n%s", src, err, out)
		}
	}
	if out, err := exec.Command("depmod", "-b", root, k.Release).CombinedOutput(); err != nil {
		return "", fmt.Errorf("depmod -b %s %s: %v\n%s", root, k.Release, err, out)
	}
	return root, nil
}

// Image is an initramfs being assembled: paths in the VM to what they hold.
// Host files are mirrored at the same path, symlinks included (on a
// merged-/usr host /lib is a link to usr/lib, and so it is in the VM).
type Image struct {
	entries map[string]entry
}

type entry struct {
	mode cpio.FileMode
	src  string // a host file to copy, or
	data []byte // the contents, or the target of a symlink
}

func NewImage() *Image {
	im := &Image{entries: map[string]entry{}}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "root", "vm", "var"} {
		im.dir(d)
	}
	im.symlink("var/run", "../run")
	// ip and iptables want these to exist; nothing reads their contents.
	im.Data("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	im.Data("etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	// `ip netns exec` binds /etc/netns/NS/resolv.conf over this one.
	im.Data("etc/resolv.conf", []byte("# no DNS in the VM; each test server gets its own\n"), 0o644)
	return im
}

func (im *Image) dir(p string) {
	p = strings.Trim(p, "/")
	for d := p; d != "." && d != ""; d = filepath.Dir(d) {
		if _, ok := im.entries[d]; !ok {
			im.entries[d] = entry{mode: cpio.TypeDir | 0o755}
		}
	}
}

func (im *Image) Data(p string, b []byte, perm os.FileMode) {
	p = strings.Trim(p, "/")
	im.dir(filepath.Dir(p))
	im.entries[p] = entry{mode: cpio.TypeReg | cpio.FileMode(perm), data: b}
}

func (im *Image) symlink(p, target string) {
	p = strings.Trim(p, "/")
	im.dir(filepath.Dir(p))
	im.entries[p] = entry{mode: cpio.TypeSymlink | 0o777, data: []byte(target)}
}

// File puts the host file src at p.
func (im *Image) File(p, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	p = strings.Trim(p, "/")
	im.dir(filepath.Dir(p))
	im.entries[p] = entry{mode: cpio.TypeReg | cpio.FileMode(fi.Mode().Perm()), src: src}
	return nil
}

// Mirror puts the host path p at the same path, following and recreating
// every symlink on the way, in the path's directories too.
func (im *Image) Mirror(p string) error {
	for range 40 { // a bound on symlink hops, as the kernel has
		p = filepath.Clean(p)
		parts := strings.Split(strings.Trim(p, "/"), "/")
		resolved := false
		for i := range parts {
			prefix := "/" + strings.Join(parts[:i+1], "/")
			fi, err := os.Lstat(prefix)
			if err != nil {
				return err
			}
			if fi.Mode()&fs.ModeSymlink == 0 {
				continue
			}
			target, err := os.Readlink(prefix)
			if err != nil {
				return err
			}
			im.symlink(prefix, target)
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(prefix), target)
			}
			p = filepath.Join(append([]string{target}, parts[i+1:]...)...)
			resolved = true
			break
		}
		if !resolved {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			if fi.IsDir() {
				im.dir(p)
				return nil
			}
			return im.File(p, p)
		}
	}
	return fmt.Errorf("%s: too many levels of symbolic links", p)
}

// Program mirrors the host's program name (looked up on PATH) and the
// shared libraries it links.
func (im *Image) Program(name string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return err
	}
	if err := im.Mirror(path); err != nil {
		return err
	}
	return im.libraries(path)
}

// libraries mirrors what ldd lists for the host file path.
func (im *Image) libraries(path string) error {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil // statically linked: ldd says "not a dynamic executable" and fails
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0] // the dynamic loader
		default:
			continue
		}
		if err := im.Mirror(lib); err != nil {
			return fmt.Errorf("%s needs %s: %w", path, lib, err)
		}
	}
	return nil
}

// Tree mirrors every file under the host directory root at prefix.
func (im *Image) Tree(prefix, root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		dst := filepath.Join(prefix, rel)
		switch {
		case d.IsDir():
			im.dir(dst)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			im.symlink(dst, target)
		default:
			return im.File(dst, p)
		}
		return nil
	})
}

// Write writes the image as a newc cpio archive, the format the kernel
// unpacks into its initial root file system, directories first.
func (im *Image) Write(w io.Writer) error {
	names := make([]string, 0, len(im.entries))
	for n := range im.entries {
		names = append(names, n)
	}
	slices.Sort(names) // a parent sorts before its children
	cw := cpio.NewWriter(w)
	for _, n := range names {
		e := im.entries[n]
		body := e.data
		if e.src != "" {
			b, err := os.ReadFile(e.src)
			if err != nil {
				return err
			}
			body = b
		}
		h := &cpio.Header{Name: n, Mode: e.mode, Size: int64(len(body))}
		if e.mode&^cpio.ModePerm == cpio.TypeDir {
			h.Size, body = 0, nil
		}
		if err := cw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if _, err := cw.Write(body); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return cw.Close()
}
