package main

import (
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/wgk3s/wgk3s/appliance"
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
	opts, err := nf.options(true)
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
		Log: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl})), Version: version, StatusSocket: *sock, Notify: sdNotify})
	return n.Run(sigs)
}

// sdNotify tells systemd about the service's state (Type=notify). Outside
// systemd (no NOTIFY_SOCKET) it does nothing. The environment variable is
// kept: the appliance notifies more than once (READY, RELOADING, STOPPING);
// k3s never sees it (the supervisor strips it from the child's env).
func sdNotify(state string) {
	daemon.SdNotify(false, state)
}
