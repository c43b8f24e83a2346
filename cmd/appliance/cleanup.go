package main

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

// runCleanup removes everything a run may have left, in the order of a
// stop: a k3s the run recorded that still runs (SIGTERM, the grace period,
// SIGKILL), the firewall chains and jumps (in every iptables backend
// present), the saved sysctls, the WireGuard interface and its socket, and
// the fail-closed routes of networks the file no longer has. systemd runs
// it as ExecStopPost=, so it must succeed when there is nothing to remove
// and must not need a valid cluster file. The fail-closed routes of the
// file's own networks stay (they cover the time until the next start)
// unless --all. It refuses to run while an appliance answers on the status
// socket, unless --force.
func runCleanup(e *env, args []string) error {
	fs := flagSet(e, "cleanup")
	path := fs.String("config", configs.DefaultPath, "the cluster file (read for the interface name and networks if it parses)")
	iface := fs.String("interface", "", "the WireGuard interface (default: the file's interface.name, else wg0)")
	all := fs.Bool("all", false, "the node stops for good: also stop k3s's pods (as k3s-killall.sh does) and remove the fail-closed routes of the file's own networks")
	force := fs.Bool("force", false, "clean up even though an appliance answers on the status socket (it would lose its interface, rules and k3s)")
	sock := fs.String("status-socket", status.DefaultSocket, "where a running appliance answers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("cleanup needs root: it removes interfaces, firewall rules and routes, and reads root's state in /run/wgk3s; fix: sudo appliance cleanup")
	}
	// A running appliance holds the lock beside its status socket, even
	// when it is too busy to answer (or stopped with SIGSTOP).
	running, err := status.Running(*sock)
	if err != nil {
		return err
	}
	if running && !*force {
		who := ""
		if r, err := status.FetchWithin(*sock, 2*time.Second); err == nil {
			who = fmt.Sprintf("node %s, up since %s; ", r.Node, r.Started.Format(time.RFC3339))
		}
		return fmt.Errorf("an appliance is running here (%sit holds %s.lock, whether or not it answers): cleanup would take its interface, rules and k3s away; "+
			"fix: systemctl stop wgk3s (which cleans up), or pass --force", who, *sock)
	}
	grace := configs.DefaultStopGrace
	name := configs.DefaultInterfaceName
	var keep []netip.Prefix
	if data, err := configs.ReadFile(*path); err == nil {
		if cl, err := configs.Parse(data, *path); err == nil {
			name, grace = cl.Interface.Name, cl.K3s.StopGracePeriod
			keep = append([]netip.Prefix{cl.Network.Masked()}, cl.K3s.PodCIDRs...)
		}
	}
	if *all {
		keep = nil
	}
	if *iface == "" {
		*iface = name
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	stopped, kerr := supervisor.StopOrphan(supervisor.DefaultStateFile, grace, log)
	if stopped {
		fmt.Fprintf(e.stderr, "stopped the k3s an earlier run left\n")
	}
	err = errors.Join(kerr, firewall.CleanUpAll())
	removed, terr := tunnel.CleanUp(*iface, tunnel.DefaultStateDir)
	if removed {
		fmt.Fprintf(e.stderr, "removed interface %s\n", *iface)
	}
	if errors.Is(terr, tunnel.ErrNotOurs) {
		// Not a failure of the cleanup: nothing of ours is there.
		fmt.Fprintf(e.stderr, "left alone: %v\n", terr)
		terr = nil
	}
	if *all {
		// The node stops for good: k3s's pods (which a stop of k3s keeps
		// running, so that a restart does not restart them) go too.
		left, perr := supervisor.StopPods()
		if left.Processes > 0 || left.Mounts > 0 || len(left.Links) > 0 {
			fmt.Fprintf(e.stderr, "stopped k3s's pods: %d process(es), %d mount(s), interfaces %v\n", left.Processes, left.Mounts, left.Links)
		}
		err = errors.Join(err, perr)
	}
	removedRoutes, kept, rerr := tunnel.CleanUpRoutes(keep)
	if len(removedRoutes) > 0 {
		fmt.Fprintf(e.stderr, "removed the fail-closed routes for %s (blackhole, metric %d)\n", joinPrefixes(removedRoutes), tunnel.BlackholeMetric)
	}
	if len(kept) > 0 {
		fmt.Fprintf(e.stderr, "kept the fail-closed routes for %s (blackhole, metric %d): they keep mesh and pod traffic from leaving in the clear until the appliance runs again; "+
			"`appliance cleanup --all` removes them\n", joinPrefixes(kept), tunnel.BlackholeMetric)
	}
	return errors.Join(err, terr, rerr)
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
