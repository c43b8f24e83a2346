package appliance

import (
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
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
