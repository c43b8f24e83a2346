package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/doctor"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/status"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// journal records what the fake parts were asked to do, in order.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(format string, a ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, fmt.Sprintf(format, a...))
}

func (j *journal) all() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

// since returns the events after the first n.
func (j *journal) since(n int) []string { return j.all()[n:] }

// fakes is one set of fake parts and the knobs that make them fail.
type fakes struct {
	j journal

	failOpen, failFirewallNew, failCleanUp error
	// failSet fails the nth call of Set (1-based) with the error.
	failSet   map[int]error
	failApply map[int]error
	setCalls  int
	applies   int

	tun *fakeTunnel
	fw  *fakeFirewall
	k3s *fakeK3s
	// applyBlock, if set, holds every Apply (and with it the device, as
	// wireguard-go's IPC lock does) until it is closed.
	applyBlock chan struct{}
	// pathMTU is the largest ICMP echo the fake wg0 carries (0: none);
	// drops the host's rules the fake firewall finds.
	pathMTU int
	drops   []string
}

func newFakes() *fakes { return &fakes{failSet: map[int]error{}, failApply: map[int]error{}} }

func (f *fakes) parts() Parts {
	return Parts{
		OpenTunnel: func(_ context.Context, cfg tunnel.Config, _ *slog.Logger, onRecreate func()) (Tunnel, error) {
			if f.failOpen != nil {
				f.j.add("wireguard open failed")
				return nil, f.failOpen
			}
			f.j.add("wireguard open %s peers=%d", cfg.Name, len(cfg.Peers))
			f.tun = &fakeTunnel{f: f, cfg: cfg, fail: make(chan error, 1), onRecreate: onRecreate}
			return f.tun, nil
		},
		NewFirewall: func(backend string, _ *slog.Logger) (Firewall, error) {
			if f.failFirewallNew != nil {
				return nil, f.failFirewallNew
			}
			f.fw = &fakeFirewall{f: f}
			return f.fw, nil
		},
		NewK3s: func(cmd K3sCommand, _ func(context.Context) error, _ *slog.Logger) K3s {
			f.j.add("k3s new %s", strings.Join(cmd.Args, " "))
			f.k3s = &fakeK3s{f: f, args: cmd.Args, fail: make(chan error, 1)}
			return f.k3s
		},
		LocalPrefixes: func(string) []netip.Prefix { return nil },
		ListenStatus: func(path string) (net.Listener, error) {
			l, err := status.Listen(path)
			if err == nil {
				f.j.add("status listen")
			}
			return l, err
		},
		ListenSync: func(addr netip.AddrPort, device string) (net.Listener, error) {
			f.j.add("sync listen %s on %s", addr, device)
			return net.Listen("tcp4", "127.0.0.1:0")
		},
		ListenMetrics: func(addr string) (net.Listener, error) {
			f.j.add("metrics listen")
			return net.Listen("tcp", addr)
		},
		SetMemoryLimit: func(rt configs.Runtime, _ *slog.Logger) { f.j.add("memory limit %d", rt.MemoryLimit) },
		Echoer:         func(string, netip.Addr) (Echoer, error) { return fakeEchoer{f}, nil },
		CreateToken: func(path string) (bool, error) {
			f.j.add("token created %s", filepath.Base(path))
			return true, nil
		},
		StopOrphanK3s: func(grace time.Duration, _ *slog.Logger) error {
			f.j.add("orphan k3s stopped (grace %s)", grace)
			return nil
		},
	}
}

type fakeTunnel struct {
	f          *fakes
	onRecreate func()
	ipc        sync.Mutex // held by Apply and Device, like wireguard-go's
	mu         sync.Mutex
	cfg        tunnel.Config
	paths      map[wgtypes.Key]tunnel.Path
	fail       chan error // a value makes Run return it
}

func (t *fakeTunnel) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		t.f.j.add("wireguard stop")
		return nil
	case err := <-t.fail:
		return err
	}
}

func (t *fakeTunnel) Apply(_ context.Context, cfg tunnel.Config) error {
	t.ipc.Lock()
	defer t.ipc.Unlock()
	if t.f.applyBlock != nil {
		<-t.f.applyBlock
	}
	t.f.applies++
	if err := t.f.failApply[t.f.applies]; err != nil {
		t.f.j.add("wireguard apply failed")
		return err
	}
	t.mu.Lock()
	t.cfg = cfg
	t.mu.Unlock()
	t.f.j.add("wireguard apply peers=%d mtu=%d", len(cfg.Peers), cfg.MTU)
	return nil
}

func (t *fakeTunnel) config() tunnel.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cfg
}

func (t *fakeTunnel) Recreations() int { return 0 }

func (t *fakeTunnel) SetPaths(p map[wgtypes.Key]tunnel.Path) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.paths = p
	return nil
}

func (t *fakeTunnel) Probe([]wgtypes.Key) error { return nil }

func (t *fakeTunnel) Renew([]wgtypes.Key) error { return nil }

func (t *fakeTunnel) Configured() map[wgtypes.Key]netip.AddrPort { return nil }

func (t *fakeTunnel) Mesh() *tunnel.Mesh { return nil }

func (t *fakeTunnel) Choice() tunnel.Choice {
	return tunnel.Choice{Mode: configs.ModeUserspace, Reason: "fake"}
}

func (t *fakeTunnel) Device() (*wgtypes.Device, error) {
	t.ipc.Lock()
	defer t.ipc.Unlock()
	d := &wgtypes.Device{Name: t.cfg.Name}
	for _, p := range t.config().Peers {
		d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: p.PublicKey})
	}
	return d, nil
}

type fakeFirewall struct {
	f       *fakes
	mu      sync.Mutex
	desired *firewall.Desired
}

func (w *fakeFirewall) Set(d firewall.Desired) error {
	w.f.setCalls++
	if err := w.f.failSet[w.f.setCalls]; err != nil {
		w.f.j.add("firewall set failed")
		// A failed Set may leave part of the rules: the state is unknown.
		w.mu.Lock()
		w.desired = &firewall.Desired{}
		w.mu.Unlock()
		return err
	}
	w.mu.Lock()
	w.desired = &d
	w.mu.Unlock()
	w.f.j.add("firewall set rules=%d", len(d.Rules))
	return nil
}

func (w *fakeFirewall) Run(ctx context.Context) error {
	<-ctx.Done()
	w.f.j.add("firewall stop")
	return w.CleanUp()
}

func (w *fakeFirewall) CleanUp() error {
	if w.f.failCleanUp != nil {
		w.f.j.add("firewall cleanup failed")
		return w.f.failCleanUp
	}
	w.mu.Lock()
	w.desired = nil
	w.mu.Unlock()
	w.f.j.add("firewall cleanup")
	return nil
}

func (w *fakeFirewall) state() *firewall.Desired {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.desired
}

func (w *fakeFirewall) Backend() string            { return "fake" }
func (w *fakeFirewall) CatchAllNote() string       { return "" }
func (w *fakeFirewall) Drops(int, string) []string { return w.f.drops }

// fakeEchoer answers every echo up to the fakes' pathMTU.
type fakeEchoer struct{ f *fakes }

func (e fakeEchoer) Echo(_ context.Context, _ netip.Addr, size int, _ time.Duration) (time.Duration, error) {
	if size > e.f.pathMTU {
		return 0, doctor.ErrNoReply
	}
	return time.Millisecond, nil
}

func (e fakeEchoer) LargestEcho(ctx context.Context, dst netip.Addr, sizes []int, _ int, t time.Duration) int {
	for _, s := range sizes {
		if _, err := e.Echo(ctx, dst, s, t); err == nil {
			return s
		}
	}
	return 0
}

func (e fakeEchoer) Close() error { return nil }

type fakeK3s struct {
	f    *fakes
	mu   sync.Mutex
	args []string
	fail chan error
}

func (k *fakeK3s) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		k.f.j.add("k3s stop")
		return nil
	case err := <-k.fail:
		k.f.j.add("k3s exited")
		return err
	}
}

func (k *fakeK3s) Update(binary string, args []string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if slices.Equal(args, k.args) {
		return false
	}
	k.args = slices.Clone(args)
	k.f.j.add("k3s restart %s", strings.Join(args, " "))
	return true
}

func (k *fakeK3s) Restart(why string) { k.f.j.add("k3s restart") }

func (k *fakeK3s) Status() supervisor.Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	return supervisor.Status{Args: slices.Clone(k.args), Running: true}
}

func (k *fakeK3s) Tail() []string { return nil }

// fakeHost is a host with a default route on eth0, a kernel without
// WireGuard and a k3s binary that passes the pre-flight unless told not to.
type fakeHost struct {
	cgroup       int    // 0 is 2
	k3sVersion   string // "" is an error
	firewalld    bool
	selinux      string
	label        string
	release      string
	noModule     error
	links        map[string]bool     // names Egress accepts
	linkKinds    map[string]string   // existing links the appliance did not make
	addrs        map[string][]string // address -> interfaces holding it
	preflightErr error
	files        map[string]bool // files that exist
}

func (h fakeHost) FileExists(path string) bool { return h.files[path] }

func (h fakeHost) KernelRelease() (string, error) {
	if h.release == "" {
		return "3.10.0-1160.el7.x86_64", nil
	}
	return h.release, nil
}

func (h fakeHost) WireGuardModule() error { return h.noModule }

func (h fakeHost) Egress(name string) (string, error) {
	if name == configs.EgressAuto {
		return "eth0", nil
	}
	if !h.links[name] {
		return "", fmt.Errorf("firewall.egress_interface %q: no such interface", name)
	}
	return name, nil
}

func (h fakeHost) K3sPreflight(string) error { return h.preflightErr }

func (h fakeHost) CgroupVersion() int {
	if h.cgroup == 0 {
		return 2
	}
	return h.cgroup
}

func (h fakeHost) K3sVersion(string) (string, error) {
	if h.k3sVersion == "" {
		return "", errors.New("fake: no k3s")
	}
	return h.k3sVersion, nil
}

func (h fakeHost) FirewalldActive() bool { return h.firewalld }

func (h fakeHost) SELinux() string {
	if h.selinux == "" {
		return "disabled"
	}
	return h.selinux
}

func (h fakeHost) FileLabel(string) string { return h.label }

func (h fakeHost) AddressOwners(addr netip.Addr) ([]string, error) {
	return h.addrs[addr.String()], nil
}

func (h fakeHost) Link(name string) (tunnel.LinkState, error) {
	if kind, ok := h.linkKinds[name]; ok {
		return tunnel.LinkState{Exists: true, Kind: kind}, nil
	}
	return tunnel.LinkState{}, nil
}

// cluster is a cluster file with a master and agents named in nodes, in
// that order; the first node is "this node" unless self says otherwise.
type cluster struct {
	keys  []wgtypes.Key
	names []string
	extra string // appended to the file (firewall, metrics, ... sections)
	// extraInterface is added to the interface section.
	extraInterface string
}

func newCluster(t testing.TB, n int) *cluster {
	t.Helper()
	c := &cluster{}
	for i := range n {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		c.keys = append(c.keys, k)
		c.names = append(c.names, fmt.Sprintf("node-%d", i))
	}
	return c
}

// text renders the file with the first n nodes.
func (c *cluster) text(n int, edit func(string) string) string {
	var b strings.Builder
	b.WriteString("network: 192.168.2.0/24\ninterface:\n  listen_port: 5418\n" + c.extraInterface + "nodes:\n")
	for i := range n {
		role := "agent"
		if i == 0 {
			role = "master"
		}
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: 192.168.2.%d\n    endpoint: 203.0.113.%d:5418\n    public_key: %q\n",
			c.names[i], role, i+1, i+10, c.keys[i].PublicKey().String())
	}
	b.WriteString("k3s:\n  binary: /usr/local/bin/k3s\n")
	b.WriteString(c.extra)
	if edit != nil {
		return edit(b.String())
	}
	return b.String()
}

// config renders the file with the first n nodes and loads it as node self.
func (c *cluster) config(t testing.TB, n, self int, edit func(string) string) *configs.Config {
	t.Helper()
	s := c.text(n, edit)
	cl, err := configs.Parse([]byte(s), "test.yaml")
	if err != nil {
		t.Fatalf("test cluster file: %v\n%s", err, s)
	}
	return &configs.Config{Cluster: cl, Self: cl.Nodes[self], PrivateKey: configs.NewPrivateKey(c.keys[self])}
}

func (c *cluster) plan(t testing.TB, n, self int, edit func(string) string) *Plan {
	t.Helper()
	return NewPlan(c.config(t, n, self, edit), fakeHost{})
}

// newApp returns an App on fakes with its status socket in a temp dir, and
// stops it when the test ends.
func newApp(t *testing.T, f *fakes) *App {
	t.Helper()
	a := New(Options{Parts: f.parts(), StatusSocket: filepath.Join(t.TempDir(), "status.sock"), Version: "test"})
	t.Cleanup(func() { a.Stop() })
	return a
}

var errBoom = errors.New("boom")
