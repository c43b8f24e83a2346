package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func key(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func peer(t *testing.T, name, addr, endpoint string) Peer {
	t.Helper()
	p := Peer{Name: name, PublicKey: key(t).PublicKey(), Keepalive: 25 * time.Second,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix(addr + "/32")}}
	if endpoint != "" {
		ep, err := configs.ParseEndpoint(endpoint)
		if err != nil {
			t.Fatal(err)
		}
		p.Endpoint = ep
	}
	return p
}

func baseConfig(t *testing.T, mode configs.Mode) Config {
	return Config{
		Name: "wg0", Mode: mode, PrivateKey: key(t), ListenPort: 5418, MTU: 1420,
		Address:    netip.MustParsePrefix("192.168.2.1/24"),
		Peers:      []Peer{peer(t, "node-1", "192.168.2.2", "198.51.100.20:5418")},
		FailClosed: []netip.Prefix{mesh, pods},
	}
}

var prefixEq = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

type rig struct {
	h     *fakeHost
	wg    *fakeWG
	state string // the tunnel's state directory
}

func newRig() *rig {
	h := newFakeHost()
	return &rig{h: h, wg: &fakeWG{h: h}}
}

func (r *rig) open(t *testing.T, cfg Config, opts Options) (*Tunnel, error) {
	t.Helper()
	if opts.Release == "" {
		opts.Release = "6.6.2-1.el7.elrepo.x86_64"
	}
	opts.ResolveBackoff = time.Millisecond
	if opts.StateDir == "" {
		if r.state == "" {
			r.state = t.TempDir()
		}
		opts.StateDir = r.state
	}
	return open(context.Background(), cfg, opts, r.h, r.wg)
}

// mustOpen opens cfg on the rig and fails the test if that fails.
func (r *rig) mustOpen(t *testing.T, cfg Config, opts Options) *Tunnel {
	t.Helper()
	tun, err := r.open(t, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tun
}

func TestOpenKernelMode(t *testing.T) {
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	tun := r.mustOpen(t, cfg, Options{})
	if tun.Choice().Mode != configs.ModeKernel {
		t.Errorf("mode = %+v, want kernel", tun.Choice())
	}
	l := r.h.links["wg0"]
	if l == nil || l.kind != "wireguard" || !l.up || l.mtu != 1420 {
		t.Fatalf("link = %+v, want an up wireguard link with mtu 1420", l)
	}
	if diff := cmp.Diff([]netip.Prefix{cfg.Address}, l.addrs, prefixEq); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if r.wg.dev.ListenPort != 5418 || r.wg.dev.PrivateKey != cfg.PrivateKey {
		t.Errorf("device port/key not set: %+v", r.wg.dev.ListenPort)
	}
	want := map[string]string{cfg.Peers[0].PublicKey.String()[:8]: "198.51.100.20:5418 [192.168.2.2/32] 25s"}
	if diff := cmp.Diff(want, r.wg.summary()); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
	if err := tun.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.h.links) != 0 || !r.wg.closed {
		t.Errorf("after Close: links %v, wgctrl closed %v", r.h.links, r.wg.closed)
	}
	if err := tun.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenFallsBackToUserspace(t *testing.T) {
	r := newRig()
	r.h.kernelErr = errors.New("operation not supported")
	tun := r.mustOpen(t, baseConfig(t, configs.ModeAuto), Options{})
	if c := tun.Choice(); c.Mode != configs.ModeUserspace || !strings.Contains(c.Reason, "operation not supported") {
		t.Errorf("choice = %+v", c)
	}
	if r.h.links["wg0"].kind != KindTUN {
		t.Errorf("link kind = %s, want tun", r.h.links["wg0"].kind)
	}
	if idx, ok := readRecord(r.state, "wg0"); !ok || idx != r.h.links["wg0"].index {
		t.Errorf("record = %d, %v; want the link's index %d", idx, ok, r.h.links["wg0"].index)
	}
	tun.Close()
	if _, ok := readRecord(r.state, "wg0"); ok {
		t.Error("the record outlived the link")
	}
	if r.h.userClosed != 1 {
		t.Errorf("userspace device closed %d times, want 1", r.h.userClosed)
	}
}

func TestOpenOldKernelUsesUserspaceWithoutTryingKernel(t *testing.T) {
	r := newRig()
	r.h.kernelErr = errors.New("must not be called") // would show in the reason if tried
	tun := r.mustOpen(t, baseConfig(t, configs.ModeAuto), Options{Release: "3.10.0-1160.el7.x86_64"})
	if c := tun.Choice(); c.Mode != configs.ModeUserspace || !strings.Contains(c.Reason, "older than 5.15") {
		t.Errorf("choice = %+v", c)
	}
}

func TestOpenForcedKernelFails(t *testing.T) {
	r := newRig()
	r.h.kernelErr = errors.New("operation not supported")
	_, err := r.open(t, baseConfig(t, configs.ModeKernel), Options{})
	if !errors.Is(err, ErrKernelUnavailable) {
		t.Fatalf("err = %v, want ErrKernelUnavailable", err)
	}
	if len(r.h.links) != 0 {
		t.Errorf("left links behind: %v", r.h.links)
	}
}

func TestOpenRemovesLeftoverLink(t *testing.T) {
	r := newRig()
	r.state = t.TempDir()
	r.h.links["wg0"] = &fakeLink{kind: KindWireGuard, index: 7, addrs: []netip.Prefix{netip.MustParsePrefix("10.9.9.9/8")}}
	writeRecord(r.state, "wg0", 7) // what the killed run wrote
	r.mustOpen(t, baseConfig(t, configs.ModeAuto), Options{})
	if got := r.h.links["wg0"].addrs; len(got) != 1 || got[0].String() != "192.168.2.1/24" {
		t.Errorf("leftover link not replaced: addrs %v", got)
	}
}

// TestOpenNeverRemovesALinkItDidNotMake: an interface.name that names the
// uplink, another tool's WireGuard link, or a leftover whose record names
// another link is refused and left as it is.
func TestOpenNeverRemovesALinkItDidNotMake(t *testing.T) {
	tests := []struct {
		name   string
		link   *fakeLink
		record int // 0: none
		want   string
	}{
		{"the uplink", &fakeLink{kind: "veth", index: 2}, 0, "existing veth interface"},
		{"a plain device", &fakeLink{kind: "device", index: 2}, 0, "existing network interface"},
		{"wg-quick's wg0", &fakeLink{kind: KindWireGuard, index: 9}, 0, "wg-quick down wg0"},
		{"a TUN of another program", &fakeLink{kind: KindTUN, index: 9}, 0, "did not make it"},
		{"a record of another link", &fakeLink{kind: KindWireGuard, index: 9}, 8, "did not make it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig()
			r.state = t.TempDir()
			r.h.links["wg0"] = tt.link
			if tt.record != 0 {
				writeRecord(r.state, "wg0", tt.record)
			}
			_, err := r.open(t, baseConfig(t, configs.ModeAuto), Options{})
			if !errors.Is(err, ErrNotOurs) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "fix:") {
				t.Fatalf("open = %v, want ErrNotOurs mentioning %q", err, tt.want)
			}
			if r.h.links["wg0"] != tt.link {
				t.Error("the link was removed or replaced")
			}
		})
	}
}

func TestOpenUndoesOnFailure(t *testing.T) {
	for _, op := range []string{"setMTU", "replaceAddress", "setUp"} {
		t.Run(op, func(t *testing.T) {
			for _, mode := range []configs.Mode{configs.ModeKernel, configs.ModeUserspace} {
				r := newRig()
				r.h.fail[op] = errors.New("injected")
				_, err := r.open(t, baseConfig(t, mode), Options{})
				if err == nil || !strings.Contains(err.Error(), "injected") {
					t.Fatalf("%s: err = %v", mode, err)
				}
				if len(r.h.links) != 0 {
					t.Errorf("%s: failed Open left %v", mode, r.h.links)
				}
			}
		})
	}
}

func TestApplyTouchesOnlyChangedPeers(t *testing.T) {
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	cfg.Peers = append(cfg.Peers, peer(t, "node-2", "192.168.2.3", "203.0.113.30:5418"))
	tun := r.mustOpen(t, cfg, Options{})
	n1, n2 := cfg.Peers[0], cfg.Peers[1]
	n3 := peer(t, "node-3", "192.168.2.4", "203.0.113.40:5418")
	moved := n2
	moved.Endpoint.Port = 6000

	tests := []struct {
		name  string
		peers []Peer
		want  []wgtypes.PeerConfig // only the fields checked: key, remove, update-only
	}{
		{"unchanged", []Peer{n1, n2}, nil},
		{"add one", []Peer{n1, n2, n3}, []wgtypes.PeerConfig{{PublicKey: n3.PublicKey}}},
		{"change one", []Peer{n1, moved, n3}, []wgtypes.PeerConfig{{PublicKey: moved.PublicKey, UpdateOnly: true}}},
		{"remove one", []Peer{n1, moved}, []wgtypes.PeerConfig{{PublicKey: n3.PublicKey, Remove: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.wg.calls)
			next := cfg
			next.Peers = tt.peers
			if err := tun.Apply(context.Background(), next); err != nil {
				t.Fatal(err)
			}
			calls := r.wg.calls[before:]
			if tt.want == nil {
				if len(calls) != 0 {
					t.Fatalf("an unchanged config sent %d configure calls", len(calls))
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("%d configure calls, want 1", len(calls))
			}
			c := calls[0]
			if c.ReplacePeers || c.PrivateKey != nil || c.ListenPort != nil {
				t.Errorf("apply touched device-wide settings: %+v", c)
			}
			var got []wgtypes.PeerConfig
			for _, p := range c.Peers {
				got = append(got, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: p.Remove, UpdateOnly: p.UpdateOnly})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("peer ops (-want +got):\n%s", diff)
			}
			if len(r.wg.dev.Peers) != len(tt.peers) {
				t.Errorf("device has %d peers, want %d", len(r.wg.dev.Peers), len(tt.peers))
			}
		})
	}
}

func TestApplyInterfaceSettings(t *testing.T) {
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	tun := r.mustOpen(t, cfg, Options{})
	next := cfg
	next.MTU, next.ListenPort = 1380, 6000
	next.Address = netip.MustParsePrefix("192.168.2.9/24")
	if err := tun.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	l := r.h.links["wg0"]
	if l.mtu != 1380 || r.wg.dev.ListenPort != 6000 {
		t.Errorf("mtu %d port %d, want 1380 6000", l.mtu, r.wg.dev.ListenPort)
	}
	if diff := cmp.Diff([]netip.Prefix{next.Address}, l.addrs, prefixEq); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
}

func TestApplyFailureLeavesPreviousState(t *testing.T) {
	for _, op := range []string{"configure", "setMTU", "replaceAddress", "deleteAddress"} {
		t.Run(op, func(t *testing.T) {
			r := newRig()
			cfg := baseConfig(t, configs.ModeAuto)
			cfg.Peers = append(cfg.Peers, peer(t, "node-2", "192.168.2.3", "203.0.113.30:5418"))
			tun := r.mustOpen(t, cfg, Options{})
			peersBefore, linkBefore, portBefore := r.wg.summary(), *r.h.links["wg0"], r.wg.dev.ListenPort

			next := cfg
			next.MTU, next.ListenPort = 1380, 7000
			next.Address = netip.MustParsePrefix("192.168.2.9/24")
			moved := cfg.Peers[1]
			moved.Endpoint.Port = 9
			next.Peers = []Peer{moved, peer(t, "node-3", "192.168.2.4", "203.0.113.40:5418"), peer(t, "node-4", "192.168.2.5", "")}
			if op == "configure" {
				r.wg.failOn = len(r.wg.calls) + 1
			} else {
				r.h.fail[op] = errors.New("injected")
			}
			if err := tun.Apply(context.Background(), next); err == nil {
				t.Fatal("Apply succeeded despite the injected failure")
			}
			delete(r.h.fail, op)
			if diff := cmp.Diff(peersBefore, r.wg.summary()); diff != "" {
				t.Errorf("peers not restored (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(linkBefore, *r.h.links["wg0"], cmp.AllowUnexported(fakeLink{}), prefixEq); diff != "" {
				t.Errorf("link not restored (-before +after):\n%s", diff)
			}
			if r.wg.dev.ListenPort != portBefore {
				t.Errorf("listen port %d, want %d", r.wg.dev.ListenPort, portBefore)
			}
			// The tunnel still knows the old state: applying it again is a no-op.
			calls := len(r.wg.calls)
			if err := tun.Apply(context.Background(), cfg); err != nil || len(r.wg.calls) != calls {
				t.Errorf("re-applying the old config: err %v, %d new calls", err, len(r.wg.calls)-calls)
			}
		})
	}
}

func TestApplyRefusesRestartOnlyChanges(t *testing.T) {
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	tun := r.mustOpen(t, cfg, Options{})
	for _, edit := range []func(*Config){
		func(c *Config) { c.Name = "wg1" },
		func(c *Config) { c.Mode = configs.ModeUserspace },
	} {
		next := cfg
		edit(&next)
		if err := tun.Apply(context.Background(), next); !errors.Is(err, ErrRestartRequired) {
			t.Errorf("err = %v, want ErrRestartRequired", err)
		}
	}
}

func TestDNSEndpoints(t *testing.T) {
	r := newRig()
	var lookups atomic.Int32
	answer := netip.MustParseAddr("198.51.100.7")
	failFirst := int32(2)
	resolver := func(_ context.Context, host string) ([]netip.Addr, error) {
		n := lookups.Add(1)
		if host == "gone.example.net" {
			return nil, errors.New("no such host")
		}
		if n <= failFirst {
			return nil, errors.New("temporary failure")
		}
		return []netip.Addr{netip.MustParseAddr("2001:db8::1"), answer}, nil
	}
	cfg := baseConfig(t, configs.ModeAuto)
	cfg.Peers = []Peer{peer(t, "node-1", "192.168.2.2", "node1.example.net:5418"), peer(t, "node-2", "192.168.2.3", "gone.example.net:5418")}
	tun := r.mustOpen(t, cfg, Options{Resolver: resolver, ResolveAttempts: 3})
	sum := r.wg.summary()
	if got := sum[cfg.Peers[0].PublicKey.String()[:8]]; !strings.HasPrefix(got, "198.51.100.7:5418 ") {
		t.Errorf("node-1 endpoint = %q, want the IPv4 answer after retries", got)
	}
	if got := sum[cfg.Peers[1].PublicKey.String()[:8]]; !strings.HasPrefix(got, "- ") {
		t.Errorf("unresolvable node-2 = %q, want configured without an endpoint", got)
	}

	// A fresh handshake: no lookup. A stale one: looked up, and moved when
	// the name now points elsewhere.
	now := time.Now()
	tun.now = func() time.Time { return now }
	r.wg.setHandshake(cfg.Peers[0].PublicKey, func(p *wgtypes.Peer) { p.LastHandshakeTime = now.Add(-10 * time.Second) })
	before := lookups.Load()
	answer = netip.MustParseAddr("198.51.100.8")
	tun.reresolve(context.Background())
	if got := lookups.Load() - before; got != 1 { // only gone.example.net, which never shook hands
		t.Errorf("%d lookups with a fresh handshake on node-1, want 1 (node-2 only)", got)
	}
	r.wg.setHandshake(cfg.Peers[0].PublicKey, func(p *wgtypes.Peer) { p.LastHandshakeTime = now.Add(-136 * time.Second) })
	tun.reresolve(context.Background())
	if got := r.wg.summary()[cfg.Peers[0].PublicKey.String()[:8]]; !strings.HasPrefix(got, "198.51.100.8:5418 ") {
		t.Errorf("node-1 endpoint after re-resolve = %q, want 198.51.100.8:5418", got)
	}
	last := r.wg.calls[len(r.wg.calls)-1]
	if len(last.Peers) != 1 || !last.Peers[0].UpdateOnly || last.ReplacePeers {
		t.Errorf("re-resolve sent %+v, want one update-only peer", last)
	}

	// Roaming moved the peer to an address that has since died; the name
	// still says .8: a stale handshake puts it back on the name's address.
	r.wg.setHandshake(cfg.Peers[0].PublicKey, func(p *wgtypes.Peer) {
		p.Endpoint = &net.UDPAddr{IP: net.IPv4(198, 51, 100, 99), Port: 40000}
	})
	tun.reresolve(context.Background())
	if got := r.wg.summary()[cfg.Peers[0].PublicKey.String()[:8]]; !strings.HasPrefix(got, "198.51.100.8:5418 ") {
		t.Errorf("node-1 endpoint after roaming away = %q, want the name's 198.51.100.8:5418", got)
	}
}
