package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/status"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
)

func runAppliance(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "run", "--role master|agent [--config FILE] [--node NAME] [--log-level LEVEL]")
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
	cfg, err := configs.Load(nf.config, opts)
	if err != nil {
		return err
	}
	// Checked before anything changes on the host.
	if err := supervisor.Preflight(cfg.Cluster.K3s.Binary, supervisor.SystemdUnitActive); err != nil {
		return usageError{err}
	}
	egress, err := firewall.ResolveEgress(cfg.Cluster.Firewall.EgressInterface)
	if err != nil {
		return usageError{err}
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl}))
	a := &app{log: log, path: nf.config, opts: opts, socket: *sock, notify: sdNotify}
	return a.run(cfg, egress)
}

// app is one running appliance: the lifecycle that ties the parts together.
type app struct {
	log    *slog.Logger
	path   string
	opts   configs.Options
	socket string
	notify func(state string) // sd_notify

	started time.Time
	tun     *tunnel.Tunnel
	fw      *firewall.Controller
	k3s     *supervisor.Supervisor
	parts   []*part // started parts, stopped in reverse order

	mu      sync.Mutex // guards what the status socket reads while a reload runs
	cfg     *configs.Config
	egress  string
	reloads status.Reloads
}

// part is a running component's Run loop.
type part struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, set before done is closed
}

func (a *app) startPart(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &part{name: name, cancel: cancel, done: make(chan struct{})}
	go func() { p.err = run(ctx); close(p.done) }()
	a.parts = append(a.parts, p)
}

// stop stops the started parts in reverse order (status, k3s, firewall,
// wg0), each finishing its cleanup before the next is stopped.
func (a *app) stop() error {
	var errs []error
	for i := len(a.parts) - 1; i >= 0; i-- {
		p := a.parts[i]
		p.cancel()
		<-p.done
		if p.err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", p.name, p.err))
		}
	}
	a.parts = nil
	return errors.Join(errs...)
}

// run brings the node up from cfg and serves signals until SIGTERM/SIGINT:
// SIGHUP re-reads the cluster file and applies the difference. Signals are
// handled one at a time, so a reload arriving during a reload waits for it.
func (a *app) run(cfg *configs.Config, egress string) error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	a.started = time.Now()
	a.log.Info("starting", "version", version, "node", cfg.Self.Name, "role", cfg.Self.Role, "config", a.path)
	applyMemoryLimit(cfg.Cluster.Runtime, a.log)
	if err := a.start(cfg, egress); err != nil {
		a.notify("STOPPING=1\nSTATUS=start failed: " + oneLine(err))
		return errors.Join(err, a.stop())
	}
	a.log.Info("running", "node", cfg.Self.Name, "address", cfg.Self.Address, "mode", a.tun.Choice().Mode,
		"firewall", a.fw.Backend(), "egress", a.egress)
	a.notify("READY=1\nSTATUS=" + a.statusLine())

	// A part whose Run returns before it is told to stop has failed.
	failed := make(chan error, len(a.parts))
	for _, p := range a.parts {
		go func(p *part) {
			<-p.done
			failed <- fmt.Errorf("%s stopped unexpectedly: %v", p.name, p.err)
		}(p)
	}
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				a.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading %s", monotonicUsec(), a.path))
				a.reload()
				a.notify("READY=1\nSTATUS=" + a.statusLine())
				continue
			}
			a.log.Info("stopping", "signal", sig.String())
			a.notify("STOPPING=1\nSTATUS=stopping")
			err := a.stop()
			if err == nil {
				a.log.Info("stopped")
			}
			return err
		case err := <-failed:
			a.log.Error("a part failed; stopping the others", "err", err)
			a.notify("STOPPING=1\nSTATUS=failed: " + oneLine(err))
			return errors.Join(err, a.stop())
		}
	}
}

// start brings up, in order: the status socket (which also proves no other
// appliance runs here), the firewall's crash recovery, wg0, the firewall
// rules, k3s and the metrics. The first failure returns; run then stops
// what started.
func (a *app) start(cfg *configs.Config, egress string) error {
	cl := cfg.Cluster
	statusL, err := status.Listen(a.socket)
	if err != nil {
		return err
	}
	var metricsL net.Listener
	if cl.Metrics.Enabled {
		if metricsL, err = net.Listen("tcp", cl.Metrics.Listen); err != nil {
			statusL.Close()
			return fmt.Errorf("metrics.listen %s: %w", cl.Metrics.Listen, err)
		}
	}
	closeListeners := func() {
		statusL.Close()
		if metricsL != nil {
			metricsL.Close()
		}
	}
	fw, err := firewall.New(firewall.Options{Logger: a.log, Backend: cl.Firewall.Backend})
	if err != nil {
		closeListeners()
		return fmt.Errorf("firewall: %w", err)
	}
	// Rules and sysctls left by a run that was killed go first.
	if err := fw.CleanUp(); err != nil {
		closeListeners()
		return fmt.Errorf("removing a previous run's firewall rules: %w", err)
	}
	tun, err := tunnel.Open(context.Background(), tunnel.FromCluster(cfg), tunnel.Options{Logger: a.log})
	if err != nil {
		closeListeners()
		return fmt.Errorf("bringing up %s: %w", cl.Interface.Name, err)
	}
	a.tun = tun
	a.startPart("wireguard", tun.Run)

	if err := fw.Set(firewall.FromCluster(cl, egress)); err != nil {
		closeListeners()
		return errors.Join(fmt.Errorf("applying firewall rules: %w", err), fw.CleanUp())
	}
	a.fw = fw
	a.startPart("firewall", fw.Run)
	if w := fw.ForwardWarning(cl.Interface.Name); w != "" {
		a.log.Warn(w)
	}

	opts := supervisor.Options{Logger: a.log, StopGrace: cl.K3s.StopGracePeriod}
	if cfg.Self.Role == configs.RoleAgent {
		opts.WaitFor = net.JoinHostPort(cl.Master().Address.String(), supervisor.APIPort)
	}
	a.k3s = supervisor.New(cl.K3s.Binary, supervisor.Args(cfg), opts)
	a.startPart("k3s", a.k3s.Run)

	a.mu.Lock()
	a.cfg, a.egress = cfg, egress
	a.mu.Unlock()
	if metricsL != nil {
		a.startPart("metrics", func(ctx context.Context) error { return status.ServeMetrics(ctx, metricsL, a.report) })
		a.log.Info("serving metrics", "listen", metricsL.Addr().String())
	}
	a.startPart("status", func(ctx context.Context) error { return status.Serve(ctx, statusL, a.report) })
	return nil
}

// reload re-reads the cluster file. An invalid file is logged, problem by
// problem, and changes nothing; a valid one is applied as a difference. If
// applying fails half-way, what was applied is reverted.
func (a *app) reload() {
	a.log.Info("reloading", "config", a.path)
	began := time.Now()
	err := a.applyReload()
	took := time.Since(began)
	a.mu.Lock()
	a.reloads.Total++
	if err != nil {
		a.reloads.Failures++
		a.reloads.Last = oneLine(err)
	} else {
		a.reloads.Last = ""
	}
	a.mu.Unlock()
	if err == nil {
		a.log.Info("reloaded", "node", a.cfg.Self.Name, "peers", len(a.cfg.Peers()), "took", took)
		return
	}
	var ce configs.Errors
	if errors.As(err, &ce) {
		for _, fe := range ce {
			a.log.Error("reload rejected: the running configuration is unchanged", "problem", fe.Error())
		}
		return
	}
	a.log.Error("reload rejected: the running configuration is unchanged", "err", oneLine(err))
}

func (a *app) applyReload() error {
	cfg, egress, err := a.loadForReload()
	if err != nil {
		return err
	}
	a.mu.Lock()
	old, oldEgress := a.cfg, a.egress
	a.mu.Unlock()
	if err := a.tun.Apply(context.Background(), tunnel.FromCluster(cfg)); err != nil {
		return fmt.Errorf("applying to %s (rolled back): %w", cfg.Cluster.Interface.Name, err)
	}
	// Most reloads change peers only; the rules then stay as they are (the
	// reconcile loop keeps checking them) and the reload costs no iptables run.
	rules, oldRules := firewall.FromCluster(cfg.Cluster, egress), firewall.FromCluster(old.Cluster, oldEgress)
	if !rules.Equal(oldRules) {
		if err := a.fw.Set(rules); err != nil {
			if rerr := errors.Join(a.tun.Apply(context.Background(), tunnel.FromCluster(old)), a.fw.Set(oldRules)); rerr != nil {
				return fmt.Errorf("applying firewall rules: %w; rolling back also failed: %v", err, rerr)
			}
			return fmt.Errorf("applying firewall rules (rolled back): %w", err)
		}
	}
	a.mu.Lock()
	a.cfg, a.egress = cfg, egress
	a.mu.Unlock()
	applyMemoryLimit(cfg.Cluster.Runtime, a.log)
	if a.k3s.Update(cfg.Cluster.K3s.Binary, supervisor.Args(cfg)) {
		a.log.Info("k3s command line changed; k3s restarts with it")
	}
	return nil
}

// loadForReload validates the new file and everything it names on this
// host before anything is changed.
func (a *app) loadForReload() (*configs.Config, string, error) {
	cfg, err := configs.Load(a.path, a.opts)
	if err != nil {
		return nil, "", err
	}
	a.mu.Lock()
	running := a.cfg.Cluster
	a.mu.Unlock()
	for _, c := range []struct{ field, from, to string }{
		{"firewall.backend", running.Firewall.Backend, cfg.Cluster.Firewall.Backend},
		{"metrics", fmt.Sprint(running.Metrics), fmt.Sprint(cfg.Cluster.Metrics)},
		{"k3s.stop_grace_period", running.K3s.StopGracePeriod.String(), cfg.Cluster.K3s.StopGracePeriod.String()},
	} {
		if c.from != c.to {
			return nil, "", fmt.Errorf("%s %s -> %s: this change needs a restart of the appliance (systemctl restart wgk3s)", c.field, c.from, c.to)
		}
	}
	egress, err := firewall.ResolveEgress(cfg.Cluster.Firewall.EgressInterface)
	if err != nil {
		return nil, "", err
	}
	if err := supervisor.Preflight(cfg.Cluster.K3s.Binary, nil); err != nil {
		return nil, "", err
	}
	return cfg, egress, nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
