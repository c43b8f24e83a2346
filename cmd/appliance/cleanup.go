package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
)

// runCleanup removes everything a run may have left, in the order of a
// stop: a k3s the run recorded that still runs (SIGTERM, the grace period,
// SIGKILL), the firewall chains and jumps (in every iptables backend
// present), the saved sysctls, the WireGuard interface and its socket. systemd runs it as ExecStopPost=, so
// it must succeed when there is nothing to remove and must not need a
// valid cluster file.
func runCleanup(e *env, args []string) error {
	fs := flagSet(e, "cleanup", "[--config FILE] [--interface NAME]")
	path := fs.String("config", configs.DefaultPath, "the cluster file (read for the interface name if it parses)")
	iface := fs.String("interface", "", "the WireGuard interface (default: the file's interface.name, else wg0)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	grace := configs.DefaultStopGrace
	name := configs.DefaultInterfaceName
	if data, err := configs.ReadFile(*path); err == nil {
		if cl, err := configs.Parse(data, *path); err == nil {
			name, grace = cl.Interface.Name, cl.K3s.StopGracePeriod
		}
	}
	if *iface == "" {
		*iface = name
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	stopped, kerr := supervisor.StopOrphan(supervisor.DefaultStateFile, grace, log)
	if stopped {
		fmt.Fprintf(e.stderr, "stopped the k3s an earlier run left\n")
	}
	err := errors.Join(kerr, firewall.CleanUpAll())
	removed, terr := tunnel.CleanUp(*iface, tunnel.DefaultStateDir)
	if removed {
		fmt.Fprintf(e.stderr, "removed interface %s\n", *iface)
	}
	if errors.Is(terr, tunnel.ErrNotOurs) {
		// Not a failure of the cleanup: nothing of ours is there.
		fmt.Fprintf(e.stderr, "left alone: %v\n", terr)
		terr = nil
	}
	return errors.Join(err, terr)
}
