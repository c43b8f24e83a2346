package appliance

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/doctor"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/status"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Tunnel is wg0 as the lifecycle uses it.
type Tunnel interface {
	// Run keeps the interface up (DNS re-resolution) until ctx is
	// cancelled, then removes it.
	Run(ctx context.Context) error
	// Apply changes the running interface to cfg or leaves it as it was.
	Apply(ctx context.Context, cfg tunnel.Config) error
	Choice() tunnel.Choice
	Device() (*wgtypes.Device, error)
	// Recreations counts the links recreated after someone deleted them.
	Recreations() int
	// SetPaths and Probe are package paths' levers (relayed or direct,
	// learned endpoints); Configured its view of the file's endpoints.
	SetPaths(map[wgtypes.Key]tunnel.Path) error
	Probe([]wgtypes.Key) error
	Renew([]wgtypes.Key) error
	Configured() map[wgtypes.Key]netip.AddrPort
	// Mesh is the relay and the probes on WireGuard's port (userspace
	// mode; nil in kernel mode).
	Mesh() *tunnel.Mesh
}

// Firewall is the sysctls and iptables rules as the lifecycle uses them.
type Firewall interface {
	// Set makes the kernel match d, or returns an error after which the
	// caller must Set the previous state or CleanUp.
	Set(d firewall.Desired) error
	// Run reconciles until ctx is cancelled, then cleans up.
	Run(ctx context.Context) error
	// CleanUp removes all the appliance's rules and restores sysctls.
	CleanUp() error
	Backend() string
	// CatchAllNote describes a catch-all REJECT in the host's rules, or "".
	CatchAllNote() string
	// Drops lists the host's rules that drop the WireGuard port or wg0's
	// traffic where the appliance's accept cannot win (doctor).
	Drops(port int, iface string) []string
}

// K3s is the supervised k3s child.
type K3s interface {
	// Run keeps k3s running until ctx is cancelled, then stops it.
	Run(ctx context.Context) error
	// Update restarts k3s with a new command line if it differs, and says
	// whether it did.
	Update(binary string, args []string) bool
	// Restart restarts k3s gracefully; why is logged once when it does.
	Restart(why string)
	Status() supervisor.Status
	// Tail is k3s's last output lines (doctor).
	Tail() []string
}

// Echoer sends ICMP echo requests over wg0 with don't-fragment set
// (doctor's path MTU probe, appliance ping).
type Echoer interface {
	Echo(ctx context.Context, dst netip.Addr, size int, timeout time.Duration) (time.Duration, error)
	LargestEcho(ctx context.Context, dst netip.Addr, sizes []int, tries int, timeout time.Duration) int
	Close() error
}

var (
	_ Tunnel   = (*tunnel.Tunnel)(nil)
	_ Firewall = (*firewall.Controller)(nil)
	_ K3s      = (*supervisor.Supervisor)(nil)
)

// Parts makes the parts an App runs. System returns the real ones; tests
// swap in fakes.
type Parts struct {
	// OpenTunnel brings wg0 up; onRecreate is called after the running
	// link was deleted by someone else and recreated.
	// Production: tunnel.Open (tunnel/tunnel.go).
	OpenTunnel func(ctx context.Context, cfg tunnel.Config, log *slog.Logger, onRecreate func()) (Tunnel, error)
	// Production: firewall.New (firewall/backend_linux.go).
	NewFirewall func(backend string, log *slog.Logger) (Firewall, error)
	// NewK3s makes the k3s supervisor; beforeStart, if not nil, runs
	// before k3s first starts (an agent fetching its token).
	// Production: supervisor.New (supervisor/supervisor.go).
	NewK3s func(cmd K3sCommand, beforeStart func(context.Context) error, log *slog.Logger) K3s
	// CreateToken writes a new random token to path, 0600, unless a file
	// is there; it says whether it made one.
	// Production: configs.CreateToken (configs/token.go).
	CreateToken func(path string) (bool, error)
	// ListenStatus opens the status socket; it fails when another
	// appliance serves it, which makes it the single-instance guard.
	// Production: status.Listen (status/status.go).
	ListenStatus func(path string) (net.Listener, error)
	// ListenMetrics opens the metrics listener.
	// Production: net.Listen("tcp", addr).
	ListenMetrics func(addr string) (net.Listener, error)
	// ListenSync opens the master's sync socket on its wg address, bound
	// to the WireGuard interface.
	// Production: meshsync.Listen (meshsync/server.go).
	ListenSync func(addr netip.AddrPort, device string) (net.Listener, error)
	// StopOrphanK3s stops a k3s that a killed run left behind (the
	// parent-death signal does not reach it under SELinux), giving it
	// grace to stop.
	// Production: supervisor.StopOrphan (supervisor/orphan.go).
	StopOrphanK3s func(grace time.Duration, log *slog.Logger) error
	// LocalPrefixes are this host's addresses and their networks, but
	// for the WireGuard interface's and the pods'.
	// Production: tunnel.LocalPrefixes (tunnel/local_linux.go).
	LocalPrefixes func(wgInterface string) []netip.Prefix
	// SetMemoryLimit applies runtime.memory_limit to this process.
	// Production: applyMemoryLimit (appliance/memory.go).
	SetMemoryLimit func(rt configs.Runtime, log *slog.Logger)
	// Echoer opens an ICMP socket on the WireGuard interface, sending
	// from this node's wg address.
	// Production: doctor.NewEchoer (doctor/echo_linux.go).
	Echoer func(iface string, src netip.Addr) (Echoer, error)
}

// System returns the real parts.
func System() Parts {
	return Parts{
		OpenTunnel: func(ctx context.Context, cfg tunnel.Config, log *slog.Logger, onRecreate func()) (Tunnel, error) {
			return tunnel.Open(ctx, cfg, tunnel.Options{Logger: log, OnRecreate: onRecreate})
		},
		NewFirewall: func(backend string, log *slog.Logger) (Firewall, error) {
			return firewall.New(firewall.Options{Logger: log, Backend: backend})
		},
		NewK3s: func(cmd K3sCommand, beforeStart func(context.Context) error, log *slog.Logger) K3s {
			return supervisor.New(cmd.Binary, cmd.Args, supervisor.Options{Logger: log, StopGrace: cmd.StopGrace,
				WaitFor: cmd.WaitFor, StateFile: supervisor.DefaultStateFile, BeforeStart: beforeStart})
		},
		CreateToken: configs.CreateToken,
		StopOrphanK3s: func(grace time.Duration, log *slog.Logger) error {
			_, err := supervisor.StopOrphan(supervisor.DefaultStateFile, grace, log)
			return err
		},
		ListenStatus:   status.Listen,
		ListenMetrics:  func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
		ListenSync:     meshsync.Listen,
		LocalPrefixes:  tunnel.LocalPrefixes,
		SetMemoryLimit: applyMemoryLimit,
		Echoer:         func(iface string, src netip.Addr) (Echoer, error) { return doctor.NewEchoer(iface, src) },
	}
}
