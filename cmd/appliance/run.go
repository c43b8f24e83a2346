package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/status"
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
	r := &runner{path: nf.config, opts: opts, host: appliance.SystemHost{Root: e.root}, notify: sdNotify,
		requests: make(chan chan error), syncs: make(chan syncRequest), calls: make(chan func()), joined: make(chan struct{}), over: make(chan struct{})}
	r.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: lvl}))
	// Said before the host is probed (k3s --version, systemctl), so that a
	// slow probe is seen as one.
	r.log.Info("starting", "version", version, "role", opts.Role, "config", r.path)
	// Everything is checked before anything changes on the host.
	plan, err := r.load()
	if err != nil {
		return err
	}
	r.app = appliance.New(appliance.Options{Logger: r.log, Version: version, StatusSocket: *sock, ReloadRequest: r.requestReload,
		SyncApply: r.syncApply, AcceptKey: r.acceptKey})
	return r.run(plan)
}

// runner is the command's side of a running appliance: signals, sd_notify
// and the cluster file; the lifecycle itself is the appliance package's.
type runner struct {
	path   string
	opts   configs.Options
	host   appliance.Host
	notify func(state string) // sd_notify
	log    *slog.Logger
	app    *appliance.App
	// requests carries `appliance reload` (systemd's ExecReload) into the
	// signal loop, so that it is serialised with SIGHUP and SIGTERM.
	requests chan chan error
	// syncs carries files from the master (sync) into the signal loop.
	syncs chan syncRequest
	// calls runs other changes of the file in the signal loop (inLoop).
	calls chan func()
	// joined is closed once this node no longer runs on a join code's key
	// (at once, for most nodes): a file from the master is taken after.
	joined chan struct{}
	// over is closed when the signal loop has ended: nothing waits on it.
	over chan struct{}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// inLoop runs f in the signal loop, serialised with reloads, and returns
// its error.
func (r *runner) inLoop(f func() error) error {
	reply := make(chan error, 1)
	select {
	case r.calls <- func() { reply <- f() }:
		return <-reply
	case <-r.app.Done():
		return appliance.ErrNotRunning
	case <-r.over:
		return appliance.ErrNotRunning
	}
}

type syncRequest struct {
	data    []byte
	confirm func(staging bool) error
	reply   chan error
}

// syncApply takes a cluster file from the master, in the signal loop.
func (r *runner) syncApply(data []byte, confirm func(staging bool) error) error {
	select {
	case <-r.joined:
	case <-r.app.Done():
		return appliance.ErrNotRunning
	case <-r.over:
		return appliance.ErrNotRunning
	}
	req := syncRequest{data: data, confirm: confirm, reply: make(chan error, 1)}
	select {
	case r.syncs <- req:
		return <-req.reply
	case <-r.app.Done():
		return appliance.ErrNotRunning
	case <-r.over:
		return appliance.ErrNotRunning
	}
}

// requestReload runs a reload in the signal loop and returns its result.
func (r *runner) requestReload() error {
	reply := make(chan error, 1)
	select {
	case r.requests <- reply:
		return <-reply
	case <-r.app.Done():
		return appliance.ErrNotRunning
	case <-r.over:
		return appliance.ErrNotRunning
	}
}

// load reads and validates the cluster file and plans it for this host.
// A bad file or a host problem is the operator's to fix (exit 2).
func (r *runner) load() (*appliance.Plan, error) {
	r.expireInvites()
	cfg, err := configs.Load(r.path, r.opts)
	if err != nil {
		return nil, err
	}
	p := appliance.NewPlan(cfg, r.host)
	if err := p.Err(); err != nil {
		return nil, usageError{err}
	}
	return p, nil
}

// run starts the appliance from plan and serves signals until SIGTERM or
// SIGINT, or until a part fails: SIGHUP re-reads the cluster file and
// applies the difference. Signals are handled one at a time, so a reload
// arriving during a reload waits for it.
func (r *runner) run(plan *appliance.Plan) error {
	var once sync.Once
	loopOver := func() { once.Do(func() { close(r.over) }) }
	defer loopOver()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	self := plan.Config.Self
	keyFile := plan.Config.Cluster.Interface.PrivateKeyFile
	// A node joined by a code that carried its key replaces that key first
	// (finishJoin); files from the master wait until it has.
	joining := self.Role != configs.RoleMaster && exists(keyFile+InvitedSuffix)
	if !joining {
		close(r.joined)
	}
	r.log.Info("plan ready; bringing the node up", "node", self.Name, "mode", plan.Mode.Mode, "k3s", plan.Facts.K3sVersion)
	if err := r.app.Start(context.Background(), plan); err != nil {
		r.notify("STOPPING=1\nSTATUS=start failed: " + oneLine(err))
		return err
	}
	rep := r.app.Report()
	r.log.Info("running", "node", self.Name, "address", self.Address, "mode", rep.Mode,
		"firewall", rep.Firewall.Backend, "egress", plan.Egress)
	r.notify("READY=1\nSTATUS=" + r.app.StatusLine())
	// Parsing and planning leave garbage the size of the cluster file's
	// nodes; hand it back now rather than at the next collection, so that
	// the idle footprint is the live heap (a full GC, off the loop).
	go debug.FreeOSMemory()
	invites := time.NewTicker(inviteCheckEvery)
	defer invites.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if joining {
		go func() {
			defer close(r.joined)
			r.finishJoin(ctx, keyFile)
		}()
	}
	for {
		select {
		case f := <-r.calls:
			f()
		case <-invites.C:
			r.checkInvites()
		case reply := <-r.requests:
			reply <- r.notifiedReload()
		case req := <-r.syncs:
			file := appliance.ConfigFile{Path: r.path, Opts: r.opts, Host: r.host}
			req.reply <- file.TakeSynced(r.app.Plan(), req.data, req.confirm, r.syncedReload)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				r.notifiedReload()
				continue
			}
			r.log.Info("stopping", "signal", sig.String())
			r.notify("STOPPING=1\nSTATUS=stopping")
			loopOver() // what waits on the loop gives up: the stop waits on it
			err := r.app.Stop()
			if err == nil {
				r.log.Info("stopped")
			}
			return err
		case <-r.app.Done():
			// The failed part and whatever stopping the others cost are in
			// the error, which main prints.
			err := r.app.Err()
			r.notify("STOPPING=1\nSTATUS=failed: " + oneLine(err))
			return err
		}
	}
}

// notifiedReload is a reload between systemd's RELOADING=1 and READY=1.
func (r *runner) notifiedReload() error {
	r.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading %s", monotonicUsec(), r.path))
	err := r.reload()
	r.notify("READY=1\nSTATUS=" + r.app.StatusLine())
	go debug.FreeOSMemory()
	return err
}

// reload re-reads the cluster file. An invalid file is logged, problem by
// problem, and changes nothing; a valid one is applied as a difference.
func (r *runner) reload() error {
	r.log.Info("reloading", "config", r.path)
	began := time.Now()
	p, err := r.load()
	if err != nil {
		r.app.ReloadRejected(err)
	} else {
		err = r.app.Reload(context.Background(), p)
	}
	if err == nil {
		r.log.Info("reloaded", "node", p.Config.Self.Name, "peers", len(p.Tunnel.Peers), "took", time.Since(began))
		return nil
	}
	var ce configs.Errors
	if errors.As(err, &ce) {
		for _, fe := range ce {
			r.log.Error("reload rejected: the running configuration is unchanged", "problem", fe.Error())
		}
		return err
	}
	r.log.Error("reload rejected: the running configuration is unchanged", "err", oneLine(err))
	return err
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// syncedReload applies a file the master handed over, already written to
// r.path, and says so in the log.
func (r *runner) syncedReload() error {
	r.log.Info("sync: the master's cluster file replaces this node's", "config", r.path, "previous", r.path+".previous")
	return r.notifiedReload()
}
