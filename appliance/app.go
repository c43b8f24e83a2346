package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/doctor"
	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/paths"
	"github.com/wgk3s/wgk3s/status"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Options configure an App.
type Options struct {
	Logger *slog.Logger
	// Version is the appliance's version, for the status report.
	Version string
	// StatusSocket is where `appliance status` reaches the App (default
	// status.DefaultSocket).
	StatusSocket string
	// Parts makes the parts; the zero value means System().
	Parts Parts
	// ReloadRequest, if set, serves `appliance reload` on the status
	// socket: it reloads the cluster file as SIGHUP does and returns why
	// the reload was rejected.
	ReloadRequest func() error
	// SyncApply takes a cluster file from the master (sync on an agent):
	// it validates it as a SIGHUP would, calls confirm, writes it and
	// reloads, or says why not (see meshsync.Client.Apply).
	SyncApply func(data []byte, confirm func(staging bool) error) error
	// AcceptKey, if set, lets the master take a node's key change (a node
	// joined by an invite replacing the invite's key): it records the new
	// key, applies it, and returns once the other nodes hold it, or says
	// why not (see meshsync.Rotate).
	AcceptKey func(ctx context.Context, n meshsync.Node, next wgtypes.Key) error
	// Retiring lists the keys of nodes whose key change is under way:
	// the sync answers their key change again (a lost answer).
	Retiring func() []meshsync.Node
	// ConfigPath is the cluster file this node runs, for the status
	// report (invite and remove refuse to edit another file).
	ConfigPath string
}

// ErrNotRunning is returned by Reload before Start or after a stop.
var ErrNotRunning = errors.New("the appliance is not running")

// App is one node's running appliance: wg0, the firewall, k3s and the
// status socket, started in that order from a Plan and stopped in reverse.
//
// Start, Reload and Stop are serialised. A part whose Run returns while
// the App runs stops the others; Done is then closed and Err says why.
type App struct {
	log   *slog.Logger
	opts  Options
	parts Parts

	life    sync.Mutex // serialises Start, Reload, Stop and a failure's stop
	phase   phase
	stack   []step  // what Start did, undone in reverse by unwind
	running []*part // the parts whose Run loops are watched
	done    chan struct{}
	err     error // why the App stopped by itself, set before done is closed

	// Set by Start before the status socket serves, never changed after.
	started time.Time
	tun     Tunnel
	fw      Firewall
	k3s     K3s // also read under mu by tunnelRecreated
	// The sync part: a server on the master, a client elsewhere.
	syncServer *meshsync.Server
	syncClient *meshsync.Client
	relisten   chan struct{} // the sync server listens again (wg0 recreated)
	serving    chan struct{} // closed once syncServer is set
	// snaps keeps a lone master's datastore: the master's taker or a
	// follower's keeper (snapshots.go).
	snaps *snapshots
	// paths keeps each peer direct or relayed through the master.
	paths *paths.Manager
	// keyHandOverWait is keyHandOverWait; tests shorten it.
	keyHandOverWait time.Duration
	// pongs hands probe answers to doctor and appliance ping.
	pongs pongWaiters

	mu      sync.Mutex // guards what the status socket reads during a reload
	plan    *Plan
	reloads status.Reloads
	last    status.Report  // the last report made (Report)
	health  *doctor.Report // doctor's last report (status's health)
}

type phase int

const (
	idle phase = iota
	running
	stopped
)

// New returns an App that has not started.
func New(opts Options) *App {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StatusSocket == "" {
		opts.StatusSocket = status.DefaultSocket
	}
	if opts.Parts.OpenTunnel == nil {
		opts.Parts = System()
	}
	return &App{log: opts.Logger, opts: opts, parts: opts.Parts, done: make(chan struct{}), relisten: make(chan struct{}, 1), serving: make(chan struct{}),
		keyHandOverWait: keyHandOverWait}
}

// Done is closed when the App has stopped, by Stop or because a part failed.
func (a *App) Done() <-chan struct{} { return a.done }

// Err is why the App stopped by itself (a part failed), or nil.
func (a *App) Err() error {
	select {
	case <-a.done:
		return a.err
	default:
		return nil
	}
}

// Plan is the plan the App runs.
func (a *App) Plan() *Plan {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.plan
}

func (a *App) setPlan(p *Plan) {
	a.mu.Lock()
	a.plan = p
	a.mu.Unlock()
}

// Start brings the node up from p, in order: the status socket (which also
// proves no other appliance runs here), the stop of a k3s that a killed run
// left, the metrics listener, the removal of a killed run's firewall rules, wg0, the firewall rules, k3s, then the
// metrics and status servers. If a step fails, the steps before it are
// undone in reverse order and the error says what failed.
func (a *App) Start(ctx context.Context, p *Plan) error {
	a.life.Lock()
	defer a.life.Unlock()
	if a.phase != idle {
		return errors.New("the appliance was started before")
	}
	if err := p.Err(); err != nil {
		return err
	}
	a.started = time.Now()
	for _, w := range p.Warnings {
		a.log.Warn(w)
	}
	a.parts.SetMemoryLimit(p.Config.Cluster.Runtime, a.log)
	if err := a.start(ctx, p); err != nil {
		err = errors.Join(err, a.unwind())
		a.phase = stopped
		close(a.done)
		return err
	}
	a.phase = running
	for _, pt := range a.running {
		go a.watch(pt)
	}
	r := a.report() // the first report: what a busy node answers with (Report)
	a.mu.Lock()
	a.last = r
	a.mu.Unlock()
	return nil
}

func (a *App) start(ctx context.Context, p *Plan) error {
	cl := p.Config.Cluster
	a.setPlan(p)
	statusL, err := a.parts.ListenStatus(a.opts.StatusSocket)
	if err != nil {
		return err
	}
	a.push("status socket", closer(statusL))
	// A k3s that a killed run left behind holds the API port and would be
	// a second k3s: it goes before anything else starts.
	if err := a.parts.StopOrphanK3s(p.K3s.StopGrace, a.log); err != nil {
		return err
	}
	var metricsL net.Listener
	if cl.Metrics.Enabled {
		if metricsL, err = a.parts.ListenMetrics(cl.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen %s: %w", cl.Metrics.Listen, err)
		}
		a.push("metrics listener", closer(metricsL))
	}
	fw, err := a.parts.NewFirewall(cl.Firewall.Backend, a.log)
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	// Rules and sysctls left by a run that was killed go first.
	if err := fw.CleanUp(); err != nil {
		return fmt.Errorf("removing a previous run's firewall rules: %w", err)
	}
	tun, err := a.parts.OpenTunnel(ctx, p.Tunnel, a.log, a.tunnelRecreated)
	if err != nil {
		return fmt.Errorf("bringing up %s: %w", p.Tunnel.Name, err)
	}
	a.tun = tun
	a.run("wireguard", tun.Run)
	if err := fw.Set(p.Firewall); err != nil {
		// Set may have applied part of the rules: remove them here, since
		// the firewall's own stop is not on the stack yet.
		return errors.Join(fmt.Errorf("applying firewall rules: %w", err), fw.CleanUp())
	}
	a.fw = fw
	a.run("firewall", fw.Run)
	if note := fw.CatchAllNote(); note != "" {
		a.log.Info(note)
	}
	k3s, err := a.newK3s(p)
	if err != nil {
		return err
	}
	a.run("k3s", k3s.Run)
	if err := a.startSync(p); err != nil {
		return err
	}
	a.startPaths(p)
	if metricsL != nil {
		a.run("metrics", func(ctx context.Context) error { return status.ServeMetrics(ctx, metricsL, a.Report) })
		a.log.Info("serving metrics", "listen", metricsL.Addr().String())
	}
	a.run("status", func(ctx context.Context) error {
		return status.ServeWith(ctx, statusL, status.Handlers{Report: a.Report, Reload: a.opts.ReloadRequest, Doctor: a.Doctor, Ping: a.Ping})
	})
	a.run("doctor", a.doctorEvery)
	return nil
}

// newK3s makes the k3s supervisor: on the master, after the agent token
// exists; on a follower, after the sync client it fetches its token with.
func (a *App) newK3s(p *Plan) (K3s, error) {
	a.snaps = &snapshots{plan: func() SnapshotPlan { return a.Plan().Snapshots }, log: a.log, followers: len(p.Sync.Followers)}
	var beforeStart func(context.Context) error
	if p.Snapshots.Take && p.Snapshots.RestoreRequested() {
		// The agent token comes back with the datastore: one made now
		// would be refused by every agent.
		a.log.Warn("restore: appliance restore asked for the datastore from the nodes: k3s starts once it is back", "marker", p.Snapshots.Store.Dir)
		beforeStart = func(ctx context.Context) error {
			if err := a.snaps.restoreFromNodes(ctx, a.servingSync); err != nil {
				return err
			}
			if p.K3s.AgentTokenFile == "" {
				return nil
			}
			_, err := a.parts.CreateToken(p.K3s.AgentTokenFile) // a copy taken without one
			return err
		}
	} else if p.K3s.AgentTokenFile != "" {
		created, err := a.parts.CreateToken(p.K3s.AgentTokenFile)
		if err != nil {
			return nil, fmt.Errorf("creating the agent token (k3s.agent_token_file): %w", err)
		}
		if created {
			a.log.Info("created the k3s agent token; agents fetch it over wg0", "agent_token_file", p.K3s.AgentTokenFile)
		}
	}
	if p.Sync.Enabled && p.Sync.Follow {
		a.syncClient = a.newSyncClient(p)
		if p.K3s.FetchToken {
			server := p.Config.Self.Role == configs.RoleServer
			beforeStart = func(ctx context.Context) error {
				if err := meshsync.EnsureToken(ctx, a.syncClient, p.K3s.TokenFile, a.log); err != nil {
					return err
				}
				if server { // it serves the agents their token in turn, and its k3s reads it
					agentToken := p.Config.Cluster.K3s.AgentTokenFile
					if err := meshsync.EnsureTokenOf(ctx, a.syncClient, meshsync.TokenAgent, agentToken, a.log); err != nil {
						return err
					}
					return alignPasswd(k3sDataDir(p.K3s.Args), agentToken, a.log)
				}
				return nil
			}
		}
	}
	k3s := a.parts.NewK3s(p.K3s, beforeStart, a.log)
	a.mu.Lock()
	a.k3s = k3s
	a.mu.Unlock()
	return k3s, nil
}

// Reload applies p to the running node as a difference: wg0 first, then the
// firewall rules if they differ, then the k3s command line (k3s restarts
// only if it changed). A plan with problems, or one that needs a restart,
// changes nothing. If the firewall fails, wg0 is put back to the running
// plan, so the node is left as it was.
func (a *App) Reload(ctx context.Context, p *Plan) error {
	a.life.Lock()
	defer a.life.Unlock()
	a.mu.Lock()
	a.reloads.Running = time.Now()
	a.mu.Unlock()
	err := a.reload(ctx, p)
	a.countReload(err)
	return err
}

func (a *App) reload(ctx context.Context, p *Plan) (err error) {
	if a.phase != running {
		return ErrNotRunning
	}
	if err := p.Err(); err != nil {
		return err
	}
	old := a.Plan()
	if err := RestartRequired(old, p); err != nil {
		return err
	}
	handedOver := a.handOver(old, p)
	defer func() {
		if handedOver && err != nil {
			a.publish(old)
		}
	}()
	if err := a.tun.Apply(ctx, p.Tunnel); err != nil {
		return fmt.Errorf("applying to %s (rolled back): %w", p.Tunnel.Name, err)
	}
	// Most reloads change peers only; the rules then stay as they are (the
	// reconcile loop keeps checking them) and the reload costs no iptables run.
	if !p.Firewall.Equal(old.Firewall) {
		if err := a.fw.Set(p.Firewall); err != nil {
			if rerr := errors.Join(a.tun.Apply(ctx, old.Tunnel), a.fw.Set(old.Firewall)); rerr != nil {
				return fmt.Errorf("applying firewall rules: %w; rolling back also failed: %w", err, rerr)
			}
			return fmt.Errorf("applying firewall rules (rolled back): %w", err)
		}
	}
	a.setPlan(p)
	a.paths.SetConfig(p.Paths)
	a.setProbePeers(p)
	a.publish(p)
	if a.syncClient != nil {
		a.syncClient.Changed() // a local reload: follow the master again
	}
	a.parts.SetMemoryLimit(p.Config.Cluster.Runtime, a.log)
	if !slices.Contains(old.K3s.Args, "--cluster-init") && slices.Contains(p.K3s.Args, "--cluster-init") {
		a.log.Warn("the file now lists k3s servers: k3s on this master restarts with --cluster-init, and at that start moves its sqlite datastore into embedded etcd, which the servers then join; the API is down until it is back",
			"servers", len(p.Config.Cluster.Servers())-1)
	}
	a.k3s.Update(p.K3s.Binary, p.K3s.Args) // restarts k3s, and says why, if its command line changed
	return nil
}

// tunnelRecreated restarts k3s after wg0 was deleted and recreated: what
// k3s bound to the old link (flannel's VXLAN device over wg0 goes with
// it) is rebuilt by a restart; the pods keep running.
func (a *App) tunnelRecreated() {
	a.mu.Lock()
	k3s := a.k3s
	a.mu.Unlock()
	if k3s != nil {
		k3s.Restart("the WireGuard interface was recreated; flannel's VXLAN device over the old one went with it")
	}
	select { // the sync server's socket was bound to the old wg0
	case a.relisten <- struct{}{}:
	default:
	}
}

// ReloadRejected counts a reload whose file could not be loaded, so that
// the status report shows it beside the reloads Reload ran.
func (a *App) ReloadRejected(err error) { a.countReload(err) }

func (a *App) countReload(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reloads.Total++
	a.reloads.Last, a.reloads.Running = "", time.Time{}
	if err != nil {
		a.reloads.Failures++
		a.reloads.Last = oneLine(err)
	}
}

// Stop stops the parts in reverse order of their start: the status and
// metrics servers, k3s, the firewall (rules removed, sysctls restored),
// wg0; each finishes its cleanup before the next is stopped. It returns
// what failed on the way; calling it again does nothing.
func (a *App) Stop() error {
	a.life.Lock()
	defer a.life.Unlock()
	if a.phase != running {
		return nil
	}
	err := a.unwind()
	a.phase = stopped
	close(a.done)
	return err
}

// watch turns a part's Run returning on its own into a stop of the App.
func (a *App) watch(pt *part) {
	<-pt.done
	if pt.stopping.Load() {
		return
	}
	a.life.Lock()
	defer a.life.Unlock()
	if a.phase != running {
		return
	}
	err := fmt.Errorf("%s stopped unexpectedly", pt.name)
	if pt.err != nil {
		err = fmt.Errorf("%s stopped unexpectedly: %w", pt.name, pt.err)
	}
	pt.reported.Store(true)
	a.log.Warn("a part stopped unexpectedly; stopping the others", "part", pt.name)
	a.err = errors.Join(err, a.unwind())
	a.phase = stopped
	close(a.done)
}

// step is one thing Start did and how to undo it.
type step struct {
	name string
	undo func() error
}

func (a *App) push(name string, undo func() error) {
	a.stack = append(a.stack, step{name, undo})
}

// unwind undoes every step, last first, and empties the stack.
func (a *App) unwind() error {
	var errs []error
	for i := len(a.stack) - 1; i >= 0; i-- {
		s := a.stack[i]
		if err := s.undo(); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", s.name, err))
		}
	}
	a.stack, a.running = nil, nil
	return errors.Join(errs...)
}

// part is a running Run loop.
type part struct {
	name     string
	cancel   context.CancelFunc
	done     chan struct{} // closed when Run returned
	err      error         // Run's result, set before done is closed
	stopping atomic.Bool   // set before cancel: Run returning is then expected
	reported atomic.Bool   // its end was already reported as the App's failure
}

// run starts a part's Run loop; unwind stops it.
func (a *App) run(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	pt := &part{name: name, cancel: cancel, done: make(chan struct{})}
	go func() { pt.err = run(ctx); close(pt.done) }()
	a.running = append(a.running, pt)
	a.push(name, pt.stop)
}

// stop cancels the part and waits for its Run to return.
func (pt *part) stop() error {
	pt.stopping.Store(true)
	pt.cancel()
	<-pt.done
	if pt.reported.Load() {
		return nil // already the App's error
	}
	return pt.err
}

// closer closes a listener that was never served; one a server has
// closed already counts as closed.
func closer(l net.Listener) func() error {
	return func() error {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
}
