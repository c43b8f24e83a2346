package tunnel

import (
	"io"
	"log/slog"
	"net/netip"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// host is what the tunnel needs from the kernel besides WireGuard's own
// configuration. The real one speaks netlink; tests use a fake.
type host interface {
	// linkInfo describes the interface called name, if it exists.
	linkInfo(name string) (info linkInfo, exists bool, err error)
	// deleteLink removes the interface; a missing one is not an error.
	deleteLink(name string) error
	// createKernelLink creates a kernel WireGuard link. It fails when the
	// kernel has no WireGuard module.
	createKernelLink(name string, mtu int) error
	// createUserspace creates a TUN device running wireguard-go and serves
	// its UAPI socket. Closing the result removes both.
	// mesh, if not nil, gets the device's UDP port (relay and probes).
	createUserspace(cfg Config, log *slog.Logger, mesh *Mesh) (io.Closer, error)
	setMTU(name string, mtu int) error
	setUp(name string) error
	replaceAddress(name string, p netip.Prefix) error
	deleteAddress(name string, p netip.Prefix) error
	// addressOwners returns the interfaces that hold addr.
	addressOwners(addr netip.Addr) ([]string, error)
	// replaceBlackhole puts a blackhole route for the mesh network behind
	// the interface's own route (a higher metric): while the interface
	// exists its route wins; when it is gone, mesh traffic is dropped
	// instead of following the default route in the clear.
	replaceBlackhole(network netip.Prefix) error
	deleteBlackhole(network netip.Prefix) error
	// blackholes lists the fail-closed routes there are (this run's, a
	// crashed run's, an earlier network's): blackholes with the
	// appliance's metric in the main table.
	blackholes() ([]netip.Prefix, error)
	// watchLinks sends a value whenever a link is deleted, until done is
	// closed.
	watchLinks(done <-chan struct{}) (<-chan struct{}, error)
}

// wgClient is the part of wgctrl.Client the tunnel uses: one path for the
// kernel link and the userspace device's UAPI socket alike.
type wgClient interface {
	Device(name string) (*wgtypes.Device, error)
	ConfigureDevice(name string, cfg wgtypes.Config) error
	Close() error
}

var _ wgClient = (*wgctrl.Client)(nil)

// BlackholeMetric is the fail-closed routes' metric: above the kernel's
// route for wg0's own address (metric 0) and flannel's routes (metric 0),
// so a fail-closed route only matters when the more specific route is gone.
// It also marks a blackhole as the appliance's.
const BlackholeMetric = 4242
