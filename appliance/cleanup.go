package appliance

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/status"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
)

// CleanUpOptions say what `appliance cleanup` removes.
type CleanUpOptions struct {
	// Config is the cluster file, read (if it parses) for the interface
	// name, the k3s stop grace and the networks whose fail-closed routes
	// stay.
	Config string
	// Interface overrides the file's interface.name.
	Interface string
	// All: the node stops for good: k3s's pods and every fail-closed
	// route go too.
	All bool
	// Force cleans up next to a running appliance.
	Force        bool
	StatusSocket string
	Log          *slog.Logger
	// Say tells the operator what was done, a line at a time.
	Say func(format string, a ...any)
}

// CleanUp removes everything a run may have left, in the order of a stop:
// a k3s the run recorded that still runs (SIGTERM, the grace period,
// SIGKILL), the firewall chains and jumps (in every iptables backend that
// has them), the saved sysctls, the WireGuard interface and its socket,
// and the fail-closed routes of networks the file no longer has. systemd
// runs it as ExecStopPost=, so it succeeds when there is nothing to remove
// and needs no valid cluster file. It refuses while an appliance runs (it
// holds the status lock, whether or not it answers), unless Force.
func CleanUp(o CleanUpOptions) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("cleanup needs root: it removes interfaces, firewall rules and routes, and reads root's state in /run/wgk3s; fix: sudo appliance cleanup")
	}
	if err := notRunning(o.StatusSocket, o.Force); err != nil {
		return err
	}
	name, grace, keep := cleanUpScope(o)
	stopped, kerr := supervisor.StopOrphan(supervisor.DefaultStateFile, grace, o.Log)
	if stopped {
		o.Say("stopped the k3s an earlier run left")
	}
	err := errors.Join(kerr, firewall.CleanUpAll())
	removed, terr := tunnel.CleanUp(name, tunnel.DefaultStateDir)
	if removed {
		o.Say("removed interface %s", name)
	}
	if errors.Is(terr, tunnel.ErrNotOurs) {
		o.Say("left alone: %v", terr) // nothing of ours is there
		terr = nil
	}
	if o.All {
		// The node stops for good: k3s's pods (which a stop of k3s keeps
		// running, so that a restart does not restart them) go too.
		left, perr := supervisor.StopPods()
		if left.Processes > 0 || left.Mounts > 0 || len(left.Links) > 0 {
			o.Say("stopped k3s's pods: %d process(es), %d mount(s), interfaces %v", left.Processes, left.Mounts, left.Links)
		}
		err = errors.Join(err, perr)
	}
	return errors.Join(err, terr, cleanUpRoutes(keep, o.Say))
}

// notRunning refuses a cleanup next to a running appliance, unless force.
func notRunning(sock string, force bool) error {
	running, err := status.Running(sock)
	if err != nil || !running || force {
		return err
	}
	who := ""
	if r, err := status.FetchWithin(sock, 2*time.Second); err == nil {
		who = fmt.Sprintf("node %s, up since %s; ", r.Node, r.Started.Format(time.RFC3339))
	}
	return fmt.Errorf("an appliance is running here (%sit holds %s.lock, whether or not it answers): cleanup would take its interface, rules and k3s away; "+
		"fix: systemctl stop wgk3s (which cleans up), or pass --force", who, sock)
}

// cleanUpScope reads the interface, the k3s stop grace and the networks
// whose routes stay from the file, if it parses.
func cleanUpScope(o CleanUpOptions) (name string, grace time.Duration, keep []netip.Prefix) {
	name, grace = configs.DefaultInterfaceName, configs.DefaultStopGrace
	if data, err := configs.ReadFile(o.Config); err == nil {
		if cl, err := configs.Parse(data, o.Config); err == nil {
			name, grace = cl.Interface.Name, cl.K3s.StopGracePeriod
			keep = append([]netip.Prefix{cl.Network.Masked()}, cl.K3s.PodCIDRs...)
		}
	}
	if o.All {
		keep = nil
	}
	if o.Interface != "" {
		name = o.Interface
	}
	return name, grace, keep
}

func cleanUpRoutes(keep []netip.Prefix, say func(string, ...any)) error {
	removed, kept, err := tunnel.CleanUpRoutes(keep)
	if len(removed) > 0 {
		say("removed the fail-closed routes for %s (blackhole, metric %d)", joinPrefixes(removed), tunnel.BlackholeMetric)
	}
	if len(kept) > 0 {
		say("kept the fail-closed routes for %s (blackhole, metric %d): they keep mesh and pod traffic from leaving in the clear until the appliance runs again; "+
			"`appliance cleanup --all` removes them", joinPrefixes(kept), tunnel.BlackholeMetric)
	}
	return err
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
