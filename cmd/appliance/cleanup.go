package main

import (
	"fmt"
	"log/slog"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/status"
)

// runCleanup removes what a run may have left (appliance.CleanUp):
// systemd's ExecStopPost.
func runCleanup(e *env, args []string) error {
	o := appliance.CleanUpOptions{Log: slog.New(slog.NewTextHandler(e.stderr, nil)),
		Say: func(format string, a ...any) { fmt.Fprintf(e.stderr, format+"\n", a...) }}
	fs := flagSet(e, "cleanup")
	fs.StringVar(&o.Config, "config", configs.DefaultPath, "the cluster file (read for the interface name and networks if it parses)")
	fs.StringVar(&o.Interface, "interface", "", "the WireGuard interface (default: the file's interface.name, else wg0)")
	fs.BoolVar(&o.All, "all", false, "the node stops for good: also stop k3s's pods (as k3s-killall.sh does) and remove the fail-closed routes of the file's own networks")
	fs.BoolVar(&o.Force, "force", false, "clean up even though an appliance runs here (it would lose its interface, rules and k3s)")
	fs.StringVar(&o.StatusSocket, "status-socket", status.DefaultSocket, "where a running appliance answers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return appliance.CleanUp(o)
}
