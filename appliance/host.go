package appliance

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/internal/bounded"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.org/x/sys/unix"
)

// Host is what a plan reads of the machine it is made for. It only reads:
// making a plan never changes the host. SystemHost is the real one; unit
// tests use a fake.
type Host interface {
	// KernelRelease is the running kernel's `uname -r`.
	KernelRelease() (string, error)
	// WireGuardModule returns why the kernel cannot run WireGuard, or nil.
	// It is asked only when the release is new enough.
	WireGuardModule() error
	// Egress resolves firewall.egress_interface: auto is the IPv4 default
	// route's interface; a name must exist.
	Egress(name string) (string, error)
	// K3sPreflight checks that the k3s binary can run and that no
	// separately installed k3s service competes with the appliance.
	K3sPreflight(binary string) error
	// CgroupVersion is 2 on a unified hierarchy, else 1.
	CgroupVersion() int
	// K3sVersion runs `binary --version` and returns the version.
	K3sVersion(binary string) (string, error)
	// FirewalldActive reports whether firewalld runs.
	FirewalldActive() bool
	// SELinux is enforcing, permissive or disabled.
	SELinux() string
	// FileLabel is path's SELinux label, "" if none.
	FileLabel(path string) string
	// FileExists reports whether path names an existing file.
	FileExists(path string) bool
	// Link describes the interface name: whether it exists, its kind and
	// whether this appliance made it.
	Link(name string) (tunnel.LinkState, error)
	// AddressOwners returns the interfaces that hold addr.
	AddressOwners(addr netip.Addr) ([]string, error)
}

// SystemHost is the machine the appliance runs on.
type SystemHost struct {
	// Root prefixes the paths probed for the WireGuard module ("/" or "").
	Root string
}

var _ Host = SystemHost{}

// KernelRelease implements Host.
func (SystemHost) KernelRelease() (string, error) { return tunnel.Release() }

// WireGuardModule implements Host without loading anything.
func (h SystemHost) WireGuardModule() error { return tunnel.ModuleAvailable(h.root())() }

// Egress implements Host.
func (SystemHost) Egress(name string) (string, error) { return firewall.ResolveEgress(name) }

// K3sPreflight implements Host.
func (SystemHost) K3sPreflight(binary string) error {
	return supervisor.Preflight(binary, supervisor.SystemdUnitActive)
}

func (h SystemHost) root() string {
	if h.Root == "" {
		return "/"
	}
	return h.Root
}

// CgroupVersion implements Host: cgroup v2 has cgroup.controllers at the
// root of /sys/fs/cgroup.
func (h SystemHost) CgroupVersion() int {
	if _, err := os.Stat(filepath.Join(h.root(), "sys/fs/cgroup/cgroup.controllers")); err == nil {
		return 2
	}
	return 1
}

// k3sVersions caches `k3s --version` by binary, size and modification
// time: a reload plans again, and a real k3s takes a moment to answer.
var k3sVersions = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

// K3sVersion implements Host.
func (SystemHost) K3sVersion(binary string) (string, error) {
	fi, err := os.Stat(binary)
	if err != nil {
		return "", err
	}
	key := fmt.Sprintf("%s %d %d", binary, fi.Size(), fi.ModTime().UnixNano())
	k3sVersions.Lock()
	v, ok := k3sVersions.m[key]
	k3sVersions.Unlock()
	if ok {
		return v, nil
	}
	out, err := bounded.Output(10*time.Second, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, binary, "--version")
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", binary, err)
	}
	m := k3sVersionRE.FindString(string(out))
	if m == "" {
		return "", fmt.Errorf("%s --version printed no version", binary)
	}
	// The full token: v1.36.0+k3s1.
	v = strings.Fields(string(out)[strings.Index(string(out), m):])[0]
	k3sVersions.Lock()
	k3sVersions.m[key] = v
	k3sVersions.Unlock()
	return v, nil
}

// FirewalldActive implements Host.
func (SystemHost) FirewalldActive() bool { return supervisor.SystemdUnitActive("firewalld.service") }

// SELinux implements Host from selinuxfs.
func (h SystemHost) SELinux() string {
	b, err := os.ReadFile(filepath.Join(h.root(), "sys/fs/selinux/enforce"))
	switch {
	case err != nil:
		return "disabled"
	case strings.TrimSpace(string(b)) == "1":
		return "enforcing"
	default:
		return "permissive"
	}
}

// AddressOwners implements Host.
func (SystemHost) AddressOwners(addr netip.Addr) ([]string, error) { return tunnel.AddressOwners(addr) }

// Link implements Host.
func (SystemHost) Link(name string) (tunnel.LinkState, error) {
	return tunnel.Inspect(name, tunnel.DefaultStateDir)
}

// FileExists implements Host.
func (SystemHost) FileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// FileLabel implements Host.
func (SystemHost) FileLabel(path string) string {
	buf := make([]byte, 256)
	n, err := unix.Getxattr(path, "security.selinux", buf)
	if err != nil || n <= 0 {
		return ""
	}
	return strings.TrimRight(string(buf[:n]), "\x00")
}
