package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/poll"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrRestartRequired is returned by Apply for changes that cannot be made to
// a running interface (its name or its WireGuard mode).
var ErrRestartRequired = errors.New("this change needs a restart of the appliance")

// Options tune a Tunnel. The zero value is the production behaviour.
type Options struct {
	Logger *slog.Logger
	// Release is the kernel release used for the mode choice (default: uname).
	Release string
	// Resolver looks up a DNS endpoint's IPv4 addresses (default: the system
	// resolver).
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// ResolveAttempts and ResolveBackoff bound the lookups of a DNS endpoint
	// at start (default 3 attempts, 1 s doubling). Apply tries once; Run
	// keeps retrying names that did not resolve.
	ResolveAttempts int
	ResolveBackoff  time.Duration
	// ReresolveInterval is how often Run checks for stale handshakes on
	// peers with DNS endpoints (default 10 s; a check that finds nothing
	// stale costs one device read).
	ReresolveInterval time.Duration
	// StateDir holds the record of the link this appliance made (default
	// /run/wgk3s): only a link recorded there is ever removed.
	StateDir string
	// LinkCheckInterval is how often Run looks for the link besides
	// watching netlink for its removal (default 2 s).
	LinkCheckInterval time.Duration
	// OnRecreate is called (on its own goroutine) after the link was
	// recreated: whatever bound to the old link, such as flannel's VXLAN
	// device, must be rebuilt.
	OnRecreate func()
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Resolver == nil {
		o.Resolver = systemResolver
	}
	if o.ResolveAttempts == 0 {
		o.ResolveAttempts = 3
	}
	if o.ResolveBackoff == 0 {
		o.ResolveBackoff = time.Second
	}
	if o.ReresolveInterval == 0 {
		o.ReresolveInterval = 10 * time.Second
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.LinkCheckInterval == 0 {
		o.LinkCheckInterval = 10 * time.Second
	}
}

// Tunnel is a live WireGuard interface kept equal to a Config.
type Tunnel struct {
	opts   Options
	log    *slog.Logger
	host   host
	wg     wgClient
	choice Choice
	now    func() time.Time

	mu    sync.Mutex // serialises Apply, re-resolution and Close
	state state
	user  io.Closer // the userspace device, nil in kernel mode
	index int       // the link's ifindex: another link of the name is not ours
	// recreations counts links recreated after someone deleted them.
	recreations int
	// closed is set by Close; later calls are no-ops.
	closed bool
	// standby wakes Run when a key change put a standby peer on the
	// device (keychange.go).
	standby chan struct{}
	// mesh is the relay and the probes on the UDP port, in userspace mode.
	mesh *Mesh
}

// Open brings the interface up from cfg: it removes a leftover interface of
// the same name (a crashed run), chooses kernel WireGuard or wireguard-go,
// sets key, port, peers, MTU and address, and sets the link up. If any step
// fails, everything Open did is undone.
func Open(ctx context.Context, cfg Config, opts Options) (*Tunnel, error) {
	wg, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("opening wgctrl: %w", err)
	}
	t, err := open(ctx, cfg, opts, netlinkHost{}, wg)
	if err != nil {
		wg.Close()
		return nil, err
	}
	return t, nil
}

func open(ctx context.Context, cfg Config, opts Options, h host, wg wgClient) (*Tunnel, error) {
	opts.setDefaults()
	if opts.Release == "" {
		r, err := Release()
		if err != nil {
			return nil, fmt.Errorf("reading the kernel release: %w", err)
		}
		opts.Release = r
	}
	t := &Tunnel{opts: opts, log: opts.Logger, host: h, wg: wg, now: time.Now, standby: make(chan struct{}, 1)}
	if err := t.recover(cfg.Name); err != nil {
		return nil, err
	}
	if err := t.create(cfg); err != nil {
		return nil, err
	}
	t.state.cfg.Name = cfg.Name // destroy needs it if configure fails
	if err := t.configure(ctx, cfg); err != nil {
		t.destroy()
		return nil, err
	}
	t.log.Info("WireGuard interface up", "interface", cfg.Name, "mode", t.choice.Mode, "address", cfg.Address,
		"listen_port", cfg.ListenPort, "mtu", cfg.MTU, "peers", len(cfg.Peers))
	return t, nil
}

// recover removes an interface left by a previous run that was killed
// before it could clean up: only a WireGuard or TUN link that the record in
// the state directory says this appliance made. Any other link of that
// name is refused and left alone. A stale UAPI socket is handled when the
// userspace device opens it.
func (t *Tunnel) recover(name string) error {
	st, err := inspect(t.host, name, t.opts.StateDir)
	if err != nil {
		return fmt.Errorf("looking for a leftover %s: %w", name, err)
	}
	if !st.Exists {
		return nil
	}
	if !st.Ours {
		return NotOursError(name, st)
	}
	t.log.Warn("removing a leftover interface from an earlier run", "interface", name, "kind", st.Kind)
	if err := t.host.deleteLink(name); err != nil {
		return fmt.Errorf("removing leftover %s: %w; fix: `ip link del %s`", name, err, name)
	}
	return nil
}

// create makes the link, in kernel or userspace mode.
func (t *Tunnel) create(cfg Config) error {
	choice, err := Choose(cfg.Mode, t.opts.Release, func() error {
		return t.host.createKernelLink(cfg.Name, cfg.MTU)
	})
	if err != nil {
		return err
	}
	t.choice = choice
	t.log.Info("WireGuard mode chosen", "mode", choice.Mode, "why", choice.Reason)
	if choice.Mode == configs.ModeUserspace {
		t.mesh = newMesh(cfg.PrivateKey)
		u, err := t.host.createUserspace(cfg, t.log, t.mesh)
		if err != nil {
			return err
		}
		t.user = u
	}
	if err := t.record(cfg.Name); err != nil {
		t.state.cfg.Name = cfg.Name
		return errors.Join(err, t.destroy())
	}
	return nil
}

// record notes the link as this appliance's, by its index.
func (t *Tunnel) record(name string) error {
	info, ok, err := t.host.linkInfo(name)
	if err == nil && !ok {
		err = os.ErrNotExist
	}
	if err == nil {
		t.index = info.Index
		err = writeRecord(t.opts.StateDir, name, info.Index)
	}
	if err != nil {
		return fmt.Errorf("recording %s as the appliance's: %w", name, err)
	}
	return nil
}

// configure applies cfg to a freshly created link.
func (t *Tunnel) configure(ctx context.Context, cfg Config) error {
	return t.configureResolved(state{cfg: cfg, peers: t.resolveAll(ctx, nil, cfg.Peers, t.opts.ResolveAttempts)})
}

// configureResolved applies st (peers already resolved, paths as learned),
// and puts the fail-closed route for the mesh in place.
func (t *Tunnel) configureResolved(st state) error {
	cfg := st.cfg
	wcfg := wgtypes.Config{
		PrivateKey:   &cfg.PrivateKey,
		ListenPort:   &cfg.ListenPort,
		ReplacePeers: true,
	}
	for _, p := range st.effective() {
		wcfg.Peers = append(wcfg.Peers, peerConfig(p))
	}
	if err := t.wg.ConfigureDevice(cfg.Name, wcfg); err != nil {
		return fmt.Errorf("configuring %s: %w", cfg.Name, explain(err, cfg.ListenPort))
	}
	if err := t.host.setMTU(cfg.Name, cfg.MTU); err != nil {
		return fmt.Errorf("setting the MTU of %s to %d: %w", cfg.Name, cfg.MTU, err)
	}
	if err := t.host.replaceAddress(cfg.Name, cfg.Address); err != nil {
		return fmt.Errorf("adding %s to %s: %w", cfg.Address, cfg.Name, err)
	}
	if err := t.host.setUp(cfg.Name); err != nil {
		return fmt.Errorf("setting %s up: %w", cfg.Name, err)
	}
	if err := t.failClosed(cfg.FailClosed); err != nil {
		return err
	}
	t.state = st
	return nil
}

// failClosed makes the fail-closed routes exactly want: those missing are
// added, and those another network left (an earlier file's, a crashed
// run's) are removed.
func (t *Tunnel) failClosed(want []netip.Prefix) error {
	have, err := t.host.blackholes()
	if err != nil {
		return fmt.Errorf("listing the fail-closed routes: %w", err)
	}
	for _, p := range want {
		if err := t.host.replaceBlackhole(p); err != nil {
			return fmt.Errorf("adding the fail-closed route for %s: %w", p, err)
		}
	}
	for _, p := range have {
		if slices.Contains(want, p) {
			continue
		}
		if err := t.host.deleteBlackhole(p); err != nil {
			return fmt.Errorf("removing the fail-closed route for %s: %w", p, err)
		}
		if want != nil { // at a stop every route goes, and that is no news
			t.log.Info("removed a fail-closed route this file no longer has", "network", p)
		}
	}
	return nil
}

// Mesh is the relay and the probes on WireGuard's port: nil in kernel
// mode, where the kernel owns the port.
func (t *Tunnel) Mesh() *Mesh { return t.mesh }

// Choice returns the WireGuard mode in use and why it was chosen.
func (t *Tunnel) Choice() Choice { return t.choice }

// Apply changes the running interface to cfg, touching only what differs:
// unchanged peers keep their sessions, removed peers go, changed peers are
// updated in place, and the private key, listen port, MTU and address are
// changed when they differ (unlike `wg syncconf`). If a step fails, the
// steps already taken are reverted, so the interface is left as it was.
func (t *Tunnel) Apply(ctx context.Context, cfg Config) error {
	prev, err := t.applicable(cfg)
	if err != nil {
		return err
	}
	// New DNS names are looked up without holding the lock, so that status
	// reads are not stuck behind a slow resolver. One attempt each: Run
	// keeps retrying names that do not resolve yet.
	peers := t.resolveAll(ctx, prev, cfg.Peers, 1)

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tunnel is closed")
	}
	old := t.state
	next := state{cfg: cfg, peers: peers, paths: old.paths}
	next.retiring = keyChanges(old, next, t.now())
	var undo []func() error
	rollback := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				err = errors.Join(err, fmt.Errorf("reverting: %w", uerr))
			}
		}
		return err
	}
	c := deviceChanges(old, next)
	if c != nil {
		if err := t.wg.ConfigureDevice(cfg.Name, *c); err != nil {
			// A partly applied UAPI set is reverted like a failed later step.
			return rollback(fmt.Errorf("configuring %s: %w", cfg.Name, errors.Join(explain(err, cfg.ListenPort), t.revertDevice(next, old))))
		}
		undo = append(undo, func() error { return t.revertDevice(next, old) })
	}
	if cfg.MTU != old.cfg.MTU {
		if err := t.host.setMTU(cfg.Name, cfg.MTU); err != nil {
			return rollback(fmt.Errorf("setting the MTU of %s to %d: %w", cfg.Name, cfg.MTU, err))
		}
		undo = append(undo, func() error { return t.host.setMTU(cfg.Name, old.cfg.MTU) })
	}
	if cfg.Address != old.cfg.Address {
		if err := t.changeAddress(cfg.Name, old.cfg.Address, cfg.Address); err != nil {
			return rollback(fmt.Errorf("changing the address of %s to %s: %w", cfg.Name, cfg.Address, err))
		}
		undo = append(undo, func() error { return t.changeAddress(cfg.Name, cfg.Address, old.cfg.Address) })
	}
	if !slices.Equal(cfg.FailClosed, old.cfg.FailClosed) {
		if err := t.failClosed(cfg.FailClosed); err != nil {
			return rollback(err)
		}
		undo = append(undo, func() error { return t.failClosed(old.cfg.FailClosed) })
	}
	t.state = next
	changed := 0
	if c != nil {
		changed = len(c.Peers)
	}
	if cfg.PrivateKey != old.cfg.PrivateKey && t.mesh != nil {
		t.mesh.Router.SetSelf(cfg.PrivateKey.PublicKey())
		t.mesh.Prober.SetKey(cfg.PrivateKey)
	}
	if cfg.PrivateKey != old.cfg.PrivateKey {
		// This node's key changed: every session is gone; start the
		// handshakes now, so that each peer sees the new key at once
		// (its standby is promoted by it, keychange.go).
		t.probeLocked(peerKeys(next.peers))
	}
	if len(next.retiring) > 0 {
		select {
		case t.standby <- struct{}{}:
		default:
		}
	}
	t.log.Info("WireGuard interface reconfigured", "interface", cfg.Name, "peers", len(cfg.Peers), "peer_changes", changed)
	return nil
}

// applicable refuses what a running interface cannot take, and returns the
// peers it has (their resolved endpoints are kept for unchanged names).
func (t *Tunnel) applicable(cfg Config) ([]resolvedPeer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		return nil, errors.New("tunnel is closed")
	case cfg.Name != t.state.cfg.Name:
		return nil, fmt.Errorf("interface.name %s -> %s: %w", t.state.cfg.Name, cfg.Name, ErrRestartRequired)
	case cfg.Mode != t.state.cfg.Mode:
		return nil, fmt.Errorf("interface.mode %s -> %s: %w", t.state.cfg.Mode, cfg.Mode, ErrRestartRequired)
	}
	return t.state.peers, nil
}

// revertDevice configures the device from state to back to state from.
func (t *Tunnel) revertDevice(from, to state) error {
	if c := deviceChanges(from, to); c != nil {
		return t.wg.ConfigureDevice(to.cfg.Name, *c)
	}
	return nil
}

// changeAddress removes the old address, then adds the new one, and puts
// the old one back if that fails. Removing first matters: when both are in
// the same subnet the new one would be a secondary address, and the kernel
// deletes secondaries with their primary (unless promote_secondaries is on).
func (t *Tunnel) changeAddress(name string, from, to netip.Prefix) error {
	if err := t.host.deleteAddress(name, from); err != nil {
		return err
	}
	if err := t.host.replaceAddress(name, to); err != nil {
		return errors.Join(err, t.host.replaceAddress(name, from))
	}
	return nil
}

// Run keeps the interface until ctx is cancelled, then removes it and
// returns what that cost. Meanwhile it re-resolves DNS endpoints of peers
// whose handshake is stale, and watches the link: if someone deletes it
// (`ip link del wg0`, a stray `appliance cleanup`), it is recreated and
// configured again at once. Mesh traffic never leaves unencrypted in the
// meantime: the fail-closed route (a blackhole for the mesh network, behind
// wg0's own route) drops it. If the link cannot be recreated, or another
// link took its name, Run returns the error and the appliance stops.
func (t *Tunnel) Run(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	// The netlink watch notices a deletion at once; the periodic check is
	// the fallback for a missed event, and the only check without a watch.
	every := t.opts.LinkCheckInterval
	deleted, err := t.host.watchLinks(done)
	if err != nil {
		every = min(every, 2*time.Second)
		t.log.Warn("cannot watch the WireGuard interface; checking it every "+every.String()+" instead", "err", err)
	}
	resolve := time.NewTicker(t.opts.ReresolveInterval)
	defer resolve.Stop()
	check := time.NewTicker(every)
	defer check.Stop()
	var promote <-chan time.Time // ticks while a key change is under way
	for {
		if t.standbys() > 0 && promote == nil {
			tk := time.NewTicker(promoteEvery)
			defer tk.Stop()
			promote = tk.C
		}
		select {
		case <-ctx.Done():
			return t.Close()
		case <-t.standby:
		case <-promote:
			if t.promoteStandbys(); t.standbys() == 0 {
				promote = nil
			}
		case <-deleted:
			if err := t.ensureLink(); err != nil {
				return err
			}
		case <-check.C:
			if err := t.ensureLink(); err != nil {
				return err
			}
		case <-resolve.C:
			t.reresolve(ctx)
		}
	}
}

// recreateRetries bounds the attempts at a userspace link that could not
// be configured once made again.
const recreateRetries = 3

// linkGoneWait bounds the wait for a closed TUN device to go.
const linkGoneWait = 5 * time.Second

// waitLinkGone waits, at most d, until no link is named name.
func (t *Tunnel) waitLinkGone(name string, d time.Duration) {
	poll.Until(d, func() bool {
		_, ok, err := t.host.linkInfo(name)
		return err == nil && !ok
	})
}

// ensureLink recreates the link if it is gone.
func (t *Tunnel) ensureLink() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	name := t.state.cfg.Name
	if t.closed {
		return nil
	}
	info, ok, err := t.host.linkInfo(name)
	switch {
	case err != nil:
		t.log.Warn("cannot look at the WireGuard interface", "interface", name, "err", err)
		return nil
	case ok && info.Index == t.index:
		return nil
	case ok:
		return fmt.Errorf("%s was deleted and another %s interface took its name: %w; stopping", name, info.Kind, ErrNotOurs)
	}
	t.log.Error("the WireGuard interface disappeared (deleted by someone else); recreating it; mesh traffic is dropped, not sent in the clear, until it is back",
		"interface", name)
	err = t.recreate()
	// Whoever deleted the link may still be at work: `appliance cleanup
	// --force` removes the UAPI socket after the link, and can remove the
	// new one the recreation just made, which then cannot be configured.
	// A userspace link is made again from scratch (the half-made one is
	// closed first), a few times, before the appliance gives up.
	for attempt := 1; err != nil && t.choice.Mode == configs.ModeUserspace && attempt <= recreateRetries; attempt++ {
		t.log.Warn("recreating the WireGuard interface failed; making it again", "interface", name, "attempt", attempt, "err", err)
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
		err = t.recreate()
	}
	if err != nil {
		return fmt.Errorf("recreating %s after it was deleted: %w", name, err)
	}
	t.recreations++
	t.log.Warn("the WireGuard interface is back with its configuration", "interface", name, "recreations", t.recreations)
	if t.opts.OnRecreate != nil {
		go t.opts.OnRecreate()
	}
	return nil
}

// recreate makes the link again in the mode chosen at start and applies
// the current configuration, with the endpoints as they were resolved.
func (t *Tunnel) recreate() error {
	cfg := t.state.cfg
	if t.user != nil {
		t.user.Close() // wireguard-go lost its TUN device; its socket goes too
		t.user = nil
		// A TUN device goes when the kernel gets to its closed file; until
		// then a new one by its name is refused (EBUSY).
		t.waitLinkGone(cfg.Name, linkGoneWait)
	}
	if t.choice.Mode == configs.ModeUserspace {
		u, err := t.host.createUserspace(cfg, t.log, t.mesh)
		if err != nil {
			return err
		}
		t.user = u
	} else if err := t.host.createKernelLink(cfg.Name, cfg.MTU); err != nil {
		return err
	}
	if err := t.record(cfg.Name); err != nil {
		return err
	}
	return t.configureResolved(t.state)
}

// Recreations counts how often the link was recreated after someone
// deleted it.
func (t *Tunnel) Recreations() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recreations
}

// Close removes the interface (and, in userspace mode, the UAPI socket and
// wireguard-go). It is safe to call more than once.
func (t *Tunnel) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	err := t.destroy()
	err = errors.Join(err, t.wg.Close())
	t.log.Info("WireGuard interface removed", "interface", t.state.cfg.Name)
	return err
}

func (t *Tunnel) destroy() error {
	var err error
	if t.user != nil {
		err = t.user.Close()
		t.user = nil
	}
	name := t.state.cfg.Name
	if name == "" {
		return err
	}
	err = errors.Join(err, t.host.deleteLink(name))
	removeRecord(t.opts.StateDir, name)
	return errors.Join(err, t.failClosed(nil))
}

// udpPortBusy says whether another socket holds UDP port on every address.
func udpPortBusy(port int) bool {
	c, err := net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	c.Close()
	return false
}

// Device returns the live WireGuard device as wgctrl sees it.
func (t *Tunnel) Device() (*wgtypes.Device, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wg.Device(t.state.cfg.Name)
}

// explain turns a busy listen port into what the operator must do. The
// kernel says EADDRINUSE; the userspace UAPI only a bare "errno=-98" in
// its text (wgctrl keeps no number), so the port itself is asked.
func explain(err error, port int) error {
	if errors.Is(err, syscall.EADDRINUSE) || udpPortBusy(port) {
		return fmt.Errorf("UDP port %d is in use by another process (ss -ulpn 'sport = :%d' shows which); "+
			"fix: stop that process or set interface.listen_port to a free port (%w)", port, port, err)
	}
	return err
}
