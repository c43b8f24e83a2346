package tunnel

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// pathRig is an agent's tunnel: the master (with an endpoint), a cloud
// node (with one) and a home node (without).
func pathRig(t *testing.T) (*rig, *Tunnel, Config, Peer, Peer, Peer) {
	t.Helper()
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	cfg.Address = netip.MustParsePrefix("192.168.2.2/24")
	master := peer(t, "master", "192.168.2.1", "198.51.100.10:5418")
	cloud := peer(t, "cloud", "192.168.2.3", "198.51.100.30:5418")
	home := peer(t, "home", "192.168.2.4", "")
	cfg.Peers = []Peer{master, cloud, home}
	return r, r.mustOpen(t, cfg, Options{}), cfg, master, cloud, home
}

func short(k wgtypes.Key) string { return k.String()[:8] }

// TestARelayedPeersEndpointIsItsRelay: relayed, the home node's endpoint
// is the relay's address and its allowed IPs stay its own (the relay
// forwards its ciphertext; nothing is decrypted there); direct again, it
// is its own address, and a roamed endpoint is not undone.
func TestARelayedPeersEndpointIsItsRelay(t *testing.T) {
	r, tun, _, master, cloud, home := pathRig(t)
	learned := netip.MustParseAddrPort("203.0.113.44:40000")
	if err := tun.SetPaths(map[wgtypes.Key]Path{home.PublicKey: {Endpoint: learned, Via: master.PublicKey}}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		short(master.PublicKey): "198.51.100.10:5418 [192.168.2.1/32] 25s",
		short(cloud.PublicKey):  "198.51.100.30:5418 [192.168.2.3/32] 25s",
		short(home.PublicKey):   "198.51.100.10:5418 [192.168.2.4/32] 25s",
	}
	if diff := cmp.Diff(want, r.wg.summary()); diff != "" {
		t.Fatalf("relayed through the master (-want +got):\n%s", diff)
	}
	if err := tun.SetPaths(map[wgtypes.Key]Path{home.PublicKey: {Endpoint: learned}}); err != nil {
		t.Fatal(err)
	}
	want[short(home.PublicKey)] = "203.0.113.44:40000 [192.168.2.4/32] 25s"
	if diff := cmp.Diff(want, r.wg.summary()); diff != "" {
		t.Fatalf("direct again (-want +got):\n%s", diff)
	}
	// WireGuard roams to where the home node's packets come from; the
	// same path set again does not undo that.
	roamed := netip.MustParseAddrPort("203.0.113.44:51000")
	r.wg.setHandshake(home.PublicKey, func(p *wgtypes.Peer) { p.Endpoint = net.UDPAddrFromAddrPort(roamed) })
	if err := tun.SetPaths(map[wgtypes.Key]Path{home.PublicKey: {Endpoint: learned}}); err != nil {
		t.Fatal(err)
	}
	if got := r.wg.summary()[short(home.PublicKey)]; got != "203.0.113.44:51000 [192.168.2.4/32] 25s" {
		t.Errorf("home after the same path again = %q, want its roamed endpoint", got)
	}
}

// TestADirectAddressFoundWinsOverTheFiles: a node found answering at its
// own network's address (two nodes behind one router) is reached there,
// though the file names its public endpoint.
func TestADirectAddressFoundWinsOverTheFiles(t *testing.T) {
	r, tun, _, _, cloud, _ := pathRig(t)
	lan := netip.MustParseAddrPort("10.3.1.2:5418")
	if err := tun.SetPaths(map[wgtypes.Key]Path{cloud.PublicKey: {Endpoint: lan}}); err != nil {
		t.Fatal(err)
	}
	if got := r.wg.summary()[short(cloud.PublicKey)]; got != "10.3.1.2:5418 [192.168.2.3/32] 25s" {
		t.Errorf("cloud = %q", got)
	}
	if err := tun.SetPaths(nil); err != nil {
		t.Fatal(err)
	}
	if got := r.wg.summary()[short(cloud.PublicKey)]; got != "198.51.100.30:5418 [192.168.2.3/32] 25s" {
		t.Errorf("cloud with no path = %q, want the file's endpoint", got)
	}
}

func TestPathsSurviveAReload(t *testing.T) {
	r, tun, cfg, master, _, home := pathRig(t)
	if err := tun.SetPaths(map[wgtypes.Key]Path{home.PublicKey: {Via: master.PublicKey}}); err != nil {
		t.Fatal(err)
	}
	next := cfg
	next.Peers = append(next.Peers, peer(t, "new", "192.168.2.5", "198.51.100.50:5418"))
	if err := tun.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if got := r.wg.summary()[short(home.PublicKey)]; got != "198.51.100.10:5418 [192.168.2.4/32] 25s" {
		t.Errorf("home after a reload = %q, want still relayed through the master", got)
	}
	// The relay leaves the file: the home node has no endpoint of its own.
	next.Peers = next.Peers[1:]
	if err := tun.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if got := r.wg.summary()[short(home.PublicKey)]; got != "198.51.100.10:5418 [192.168.2.4/32] 25s" {
		t.Errorf("home without its relay in the file = %q (WireGuard keeps what it has)", got)
	}
}

func TestSetPathsFailureLeavesThePathsAsTheyWere(t *testing.T) {
	r, tun, _, master, cloud, home := pathRig(t)
	before := r.wg.summary()
	r.wg.failOn = len(r.wg.calls) + 1
	err := tun.SetPaths(map[wgtypes.Key]Path{home.PublicKey: {Via: master.PublicKey}, cloud.PublicKey: {Via: master.PublicKey}})
	if err == nil {
		t.Fatal("SetPaths succeeded though the device failed")
	}
	if diff := cmp.Diff(before, r.wg.summary()); diff != "" {
		t.Errorf("a failed SetPaths changed the device (-before +after):\n%s", diff)
	}
	r.wg.failOn = 0
	// And the tunnel still thinks so: the same change is made in full.
	if err := tun.SetPaths(map[wgtypes.Key]Path{home.PublicKey: {Via: master.PublicKey}, cloud.PublicKey: {Via: master.PublicKey}}); err != nil {
		t.Fatal(err)
	}
	if got := r.wg.summary()[short(cloud.PublicKey)]; got != "198.51.100.10:5418 [192.168.2.3/32] 25s" {
		t.Errorf("cloud = %q", got)
	}
}

func TestProbeTogglesKeepalive(t *testing.T) {
	r, tun, _, _, cloud, home := pathRig(t)
	before := len(r.wg.calls)
	// home has no endpoint yet: it cannot be probed.
	if err := tun.Probe([]wgtypes.Key{cloud.PublicKey, home.PublicKey}); err != nil {
		t.Fatal(err)
	}
	calls := r.wg.calls[before:]
	if len(calls) != 2 {
		t.Fatalf("%d configure calls, want 2 (keepalive off, then on)", len(calls))
	}
	for i, want := range []time.Duration{0, 25 * time.Second} {
		c := calls[i]
		if len(c.Peers) != 1 || c.Peers[0].PublicKey != cloud.PublicKey || !c.Peers[0].UpdateOnly ||
			c.Peers[0].PersistentKeepaliveInterval == nil || *c.Peers[0].PersistentKeepaliveInterval != want ||
			c.Peers[0].Endpoint != nil || c.Peers[0].ReplaceAllowedIPs {
			t.Errorf("call %d = %+v, want only cloud's keepalive set to %s", i, c.Peers, want)
		}
	}
	if got := r.wg.summary()[short(cloud.PublicKey)]; got != "198.51.100.30:5418 [192.168.2.3/32] 25s" {
		t.Errorf("cloud after a probe = %q", got)
	}
}
