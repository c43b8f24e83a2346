package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/membership"
	"golang.org/x/sys/unix"
)

// NodeOptions configure a Node.
type NodeOptions struct {
	// Path is the cluster file; Opts pick this node in it.
	Path string
	Opts configs.Options
	Host Host
	Log  *slog.Logger
	// Version is the appliance's, for the status report.
	Version string
	// StatusSocket is where `appliance status` reaches the node.
	StatusSocket string
	// Notify tells systemd the service's state (sd_notify); nil: nobody.
	Notify func(state string)
	// Parts makes the parts (tests); the zero value is System().
	Parts Parts
}

// HostError is a cluster file this host cannot run (a missing k3s, an
// interface it did not make): the operator's to fix, like a bad file.
type HostError struct{ Err error }

func (e *HostError) Error() string { return e.Err.Error() }
func (e *HostError) Unwrap() error { return e.Err }

// Node is the running appliance of one machine: it loads the cluster
// file, starts the App, and then serialises everything that changes the
// node in one loop: SIGHUP and `appliance reload`, files from the master,
// the master's edits of its own file (a node's key change, an expired
// invite) and a joined node's key switch. SIGTERM stops it.
type Node struct {
	o   NodeOptions
	log *slog.Logger
	app *App
	// master edits the master's file (nil on other nodes).
	master *membership.Master

	syncs    chan syncRequest // files from the master
	calls    chan func()      // other changes of the file
	switched chan error       // the joined node's key switch ended
	over     chan struct{}    // closed when the loop has ended
	overOnce sync.Once
	// joining is set while this node runs on a join code's key: files
	// from the master wait until it has its own.
	joining chan struct{}
}

// NewNode returns a Node that has not started.
func NewNode(o NodeOptions) *Node {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Notify == nil {
		o.Notify = func(string) {}
	}
	return &Node{o: o, log: o.Log, syncs: make(chan syncRequest), calls: make(chan func()),
		switched: make(chan error, 1), over: make(chan struct{}), joining: make(chan struct{})}
}

// Run loads the cluster file, brings the node up and serves sigs until
// SIGTERM or SIGINT, or until a part fails. Everything is checked before
// anything changes on the host: a bad file is a configs.Errors, a host
// that cannot run it a *HostError.
func (n *Node) Run(sigs <-chan os.Signal) error {
	defer n.overOnce.Do(func() { close(n.over) })
	n.log.Info("starting", "version", n.o.Version, "role", n.o.Opts.Role, "config", n.o.Path)
	if n.o.Opts.Role == configs.RoleMaster {
		n.tidyAtStart()
	} else {
		n.recoverSwitch()
	}
	plan, err := n.load()
	if err != nil {
		return err
	}
	n.app = New(Options{Logger: n.log, Version: n.o.Version, StatusSocket: n.o.StatusSocket, Parts: n.o.Parts, ConfigPath: n.o.Path,
		ReloadRequest: n.requestReload, SyncApply: n.syncApply, AcceptKey: n.acceptKey, Retiring: n.retiring})
	n.log.Info("plan ready; bringing the node up", "node", plan.Config.Self.Name, "mode", plan.Mode.Mode, "k3s", plan.Facts.K3sVersion)
	if err := n.app.Start(context.Background(), plan); err != nil {
		n.o.Notify("STOPPING=1\nSTATUS=start failed: " + oneLine(err))
		return err
	}
	rep := n.app.Report()
	n.log.Info("running", "node", plan.Config.Self.Name, "address", plan.Config.Self.Address, "mode", rep.Mode,
		"firewall", rep.Firewall.Backend, "egress", plan.Egress)
	n.o.Notify("READY=1\nSTATUS=" + n.app.StatusLine())
	// Parsing and planning leave garbage the size of the cluster file's
	// nodes; hand it back now (a full GC, off the loop).
	go debug.FreeOSMemory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.startSwitch(ctx, plan)
	return n.loop(sigs)
}

// loop serves the node's changes one at a time until it stops.
func (n *Node) loop(sigs <-chan os.Signal) error {
	tidy := time.NewTimer(inviteCheckEvery)
	defer tidy.Stop()
	due := time.Now().Add(inviteCheckEvery)
	// soon brings the next look at the invites forward when a key change
	// began (it is used within a second).
	soon := func() {
		if every := n.tidyEvery(); time.Until(due) > every {
			tidy.Reset(every)
			due = time.Now().Add(every)
		}
	}
	for {
		select {
		case f := <-n.calls:
			f()
			soon()
		case <-tidy.C:
			if n.tidy() {
				n.notifiedReload()
			}
			every := n.tidyEvery()
			tidy.Reset(every)
			due = time.Now().Add(every)
		case req := <-n.syncs:
			req.reply <- n.takeSynced(req)
		case err := <-n.switched:
			if err != nil {
				return n.stop(err)
			}
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				n.notifiedReload()
				continue
			}
			n.log.Info("stopping", "signal", sig.String())
			return n.stop(nil)
		case <-n.app.Done():
			// The failed part and whatever stopping the others cost are in
			// the error, which main prints.
			err := n.app.Err()
			n.o.Notify("STOPPING=1\nSTATUS=failed: " + oneLine(err))
			return err
		}
	}
}

// stop stops the App; why, if not nil, is the reason and the result.
func (n *Node) stop(why error) error {
	status := "stopping"
	if why != nil {
		status = "failed: " + oneLine(why)
		n.log.Error("stopping", "err", oneLine(why))
	}
	n.o.Notify("STOPPING=1\nSTATUS=" + status)
	n.overOnce.Do(func() { close(n.over) }) // what waits on the loop gives up: the stop waits on it
	err := errors.Join(why, n.app.Stop())
	if err == nil {
		n.log.Info("stopped")
	}
	return err
}

// inLoop runs f in the loop, serialised with reloads, and returns its
// error.
func (n *Node) inLoop(f func() error) error {
	reply := make(chan error, 1)
	select {
	case n.calls <- func() { reply <- f() }:
		return <-reply
	case <-n.app.Done():
	case <-n.over:
	}
	return ErrNotRunning
}

// requestReload runs a reload in the loop and returns its result.
func (n *Node) requestReload() error {
	return n.inLoop(n.notifiedReload)
}

// load reads and validates the cluster file and plans it for this host.
func (n *Node) load() (*Plan, error) {
	cfg, err := configs.Load(n.o.Path, n.o.Opts)
	if err != nil {
		return nil, err
	}
	p := NewPlan(cfg, n.o.Host)
	if err := p.Err(); err != nil {
		return nil, &HostError{err}
	}
	return p, nil
}

// notifiedReload is a reload between systemd's RELOADING=1 and READY=1.
// On the master it first looks at the open invites (an expired one's node
// leaves the file, which this reload then applies).
func (n *Node) notifiedReload() error {
	n.o.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading %s", monotonicUsec(), n.o.Path))
	n.tidy()
	err := n.reload()
	n.o.Notify("READY=1\nSTATUS=" + n.app.StatusLine())
	go debug.FreeOSMemory()
	return err
}

// reload re-reads the cluster file. An invalid file is logged, problem by
// problem, and changes nothing; a valid one is applied as a difference.
func (n *Node) reload() error {
	n.log.Info("reloading", "config", n.o.Path)
	began := time.Now()
	p, err := n.load()
	if err != nil {
		n.app.ReloadRejected(err)
	} else {
		err = n.app.Reload(context.Background(), p)
	}
	if err == nil {
		n.log.Info("reloaded", "node", p.Config.Self.Name, "peers", len(p.Tunnel.Peers), "took", time.Since(began))
		return nil
	}
	var ce configs.Errors
	if errors.As(err, &ce) {
		for _, fe := range ce {
			n.log.Error("reload rejected: the running configuration is unchanged", "problem", fe.Error())
		}
		return err
	}
	n.log.Error("reload rejected: the running configuration is unchanged", "err", oneLine(err))
	return err
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1 to order the reload against its own clock.
func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}
