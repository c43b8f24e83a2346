package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/status"
)

// runAppliance runs the node until SIGTERM or SIGINT, or until a part
// fails; SIGHUP reloads the cluster file (appliance.Node).
func runAppliance(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "run")
	nf.register(fs)
	level := fs.String("log-level", "info", "debug, info, warn or error")
	sock := fs.String("status-socket", status.DefaultSocket, "where `appliance status` reaches this process")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := configs.OptionsFor(nf.role, nf.node, true)
	if err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return usagef("--log-level %q: use debug, info, warn or error", *level)
	}
	path := nf.config
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	n := appliance.NewNode(appliance.NodeOptions{Path: path, Opts: opts, Host: appliance.SystemHost{Root: e.root},
		Log: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl})), Version: version, StatusSocket: *sock,
		// systemd's Type=notify (nothing outside systemd); NOTIFY_SOCKET is
		// kept for READY, RELOADING, STOPPING, and stripped from k3s's env.
		Notify: func(state string) { daemon.SdNotify(false, state) }})
	return n.Run(sigs)
}

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
