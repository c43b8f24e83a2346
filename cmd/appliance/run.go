package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/tunnel"
)

func runAppliance(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "run", "--role master|agent [--config FILE] [--node NAME] [--log-level LEVEL]")
	nf.register(fs)
	level := fs.String("log-level", "info", "debug, info, warn or error")
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
	cfg, err := configs.Load(nf.config, opts)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl}))
	a := &app{log: log, path: nf.config, opts: opts}
	return a.run(cfg)
}

// app is one running appliance: the lifecycle that ties the parts together.
type app struct {
	log  *slog.Logger
	path string
	opts configs.Options
	tun  *tunnel.Tunnel
}

// run brings the node up from cfg and serves signals until SIGTERM/SIGINT:
// SIGHUP re-reads the cluster file and applies the difference. Signals are
// handled one at a time, so a reload arriving during a reload waits for it.
func (a *app) run(cfg *configs.Config) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.log.Info("starting", "version", version, "node", cfg.Self.Name, "role", cfg.Self.Role, "config", a.path)
	tun, err := tunnel.Open(ctx, tunnel.FromCluster(cfg), tunnel.Options{Logger: a.log})
	if err != nil {
		return fmt.Errorf("bringing up %s: %w", cfg.Cluster.Interface.Name, err)
	}
	a.tun = tun
	tunDone := make(chan error, 1)
	go func() { tunDone <- tun.Run(ctx) }()
	a.log.Info("running", "node", cfg.Self.Name, "address", cfg.Self.Address, "mode", tun.Choice().Mode)

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				a.reload(ctx)
				continue
			}
			a.log.Info("stopping", "signal", sig.String())
			cancel()
			err := <-tunDone
			a.log.Info("stopped")
			return err
		case err := <-tunDone:
			if err == nil {
				err = errors.New("the tunnel stopped unexpectedly")
			}
			return err
		}
	}
}

// reload re-reads the cluster file. An invalid file is logged, problem by
// problem, and changes nothing; a valid one is applied as a difference.
func (a *app) reload(ctx context.Context) {
	a.log.Info("reloading", "config", a.path)
	cfg, err := configs.Load(a.path, a.opts)
	if err != nil {
		var ce configs.Errors
		if errors.As(err, &ce) {
			for _, fe := range ce {
				a.log.Error("reload rejected: the running configuration is unchanged", "problem", fe.Error())
			}
			return
		}
		a.log.Error("reload rejected: the running configuration is unchanged", "err", err)
		return
	}
	if err := a.tun.Apply(ctx, tunnel.FromCluster(cfg)); err != nil {
		a.log.Error("reload failed and was rolled back", "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	a.log.Info("reloaded", "node", cfg.Self.Name, "peers", len(cfg.Peers()))
}
