//go:build !linux

package tunnel

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
)

// errNotLinux is what every host operation returns off Linux: the
// appliance brings up WireGuard on Linux only; elsewhere the package builds
// for `appliance check` and the unit tests.
var errNotLinux = errors.New("WireGuard interfaces are managed on Linux only")

type netlinkHost struct{}

func (netlinkHost) linkInfo(string) (linkInfo, bool, error)    { return linkInfo{}, false, errNotLinux }
func (netlinkHost) deleteLink(string) error                    { return errNotLinux }
func (netlinkHost) createKernelLink(string, int) error         { return errNotLinux }
func (netlinkHost) setMTU(string, int) error                   { return errNotLinux }
func (netlinkHost) setUp(string) error                         { return errNotLinux }
func (netlinkHost) replaceAddress(string, netip.Prefix) error  { return errNotLinux }
func (netlinkHost) deleteAddress(string, netip.Prefix) error   { return errNotLinux }
func (netlinkHost) addressOwners(netip.Addr) ([]string, error) { return nil, errNotLinux }
func (netlinkHost) replaceBlackhole(netip.Prefix) error        { return errNotLinux }
func (netlinkHost) deleteBlackhole(netip.Prefix) error         { return errNotLinux }
func (netlinkHost) blackholes() ([]netip.Prefix, error)        { return nil, errNotLinux }
func (netlinkHost) watchLinks(<-chan struct{}) (<-chan struct{}, error) {
	return nil, errNotLinux
}
func (netlinkHost) createUserspace(Config, *slog.Logger, *Mesh) (io.Closer, error) {
	return nil, errNotLinux
}

// Release returns the running kernel's release; off Linux there is none.
func Release() (string, error) { return "", errNotLinux }

// ModuleAvailable reports that there is no WireGuard module off Linux.
func ModuleAvailable(string) func() error { return func() error { return errNotLinux } }

// CleanUp has nothing to remove off Linux.
func CleanUp(string, string) (bool, error) { return false, nil }

// CleanUpRoutes has nothing to remove off Linux.
func CleanUpRoutes([]netip.Prefix) (removed, kept []netip.Prefix, err error) { return nil, nil, nil }
