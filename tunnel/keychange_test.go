package tunnel

import (
	"context"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestAKeyChangeIsMakeBeforeBreak: a file that gives node-1 a new key
// keeps the old key with node-1's allowed IPs and adds the new one as a
// standby without any; the new key's first handshake moves the allowed
// IPs to it and removes the old key. A standby that never handshakes is
// promoted after retireAfter.
func TestAKeyChangeIsMakeBeforeBreak(t *testing.T) {
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	cfg.Peers = append(cfg.Peers, peer(t, "node-2", "192.168.2.3", "203.0.113.30:5418"))
	tun := r.mustOpen(t, cfg, Options{})
	now := time.Unix(1800000000, 0)
	tun.now = func() time.Time { return now }
	old := cfg.Peers[0].PublicKey
	next := cfg
	next.Peers = append([]Peer(nil), cfg.Peers...)
	next.Peers[0].PublicKey = key(t).PublicKey()
	nk := next.Peers[0].PublicKey
	if err := tun.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	sum := r.wg.summary()
	if got := sum[old.String()[:8]]; got != "198.51.100.20:5418 [192.168.2.2/32] 25s" {
		t.Errorf("the old key while the change is under way: %q", got)
	}
	if got := sum[nk.String()[:8]]; got != "198.51.100.20:5418 [] 25s" {
		t.Errorf("the new key while the change is under way: %q (want a standby: no allowed IPs)", got)
	}
	tun.promoteStandbys()
	if len(r.wg.summary()) != 3 {
		t.Fatalf("promoted without a handshake: %v", r.wg.summary())
	}
	r.wg.setHandshake(nk, func(p *wgtypes.Peer) { p.LastHandshakeTime = now })
	tun.promoteStandbys()
	sum = r.wg.summary()
	if _, ok := sum[old.String()[:8]]; ok || len(sum) != 2 {
		t.Errorf("the old key after the new one's handshake: %v", sum)
	}
	if got := sum[nk.String()[:8]]; got != "198.51.100.20:5418 [192.168.2.2/32] 25s" {
		t.Errorf("the new key after its handshake: %q", got)
	}
	if tun.standbys() != 0 {
		t.Error("the change is still under way")
	}

	// Another change, and no handshake: promoted after retireAfter.
	again := next
	again.Peers = append([]Peer(nil), next.Peers...)
	again.Peers[1].PublicKey = key(t).PublicKey()
	if err := tun.Apply(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if len(r.wg.summary()) != 3 {
		t.Fatalf("no standby for node-2's new key: %v", r.wg.summary())
	}
	now = now.Add(retireAfter)
	tun.promoteStandbys()
	if sum := r.wg.summary(); len(sum) != 2 || sum[again.Peers[1].PublicKey.String()[:8]] != "203.0.113.30:5418 [192.168.2.3/32] 25s" {
		t.Errorf("after retireAfter: %v", sum)
	}
}

// TestThisNodesKeyChangeStartsHandshakes: a new private key drops every
// session; the tunnel starts the handshakes at once (a keepalive toggle).
func TestThisNodesKeyChangeStartsHandshakes(t *testing.T) {
	r := newRig()
	cfg := baseConfig(t, configs.ModeAuto)
	tun := r.mustOpen(t, cfg, Options{})
	next := cfg
	next.PrivateKey = key(t)
	before := len(r.wg.calls)
	if err := tun.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	calls := r.wg.calls[before:]
	if len(calls) != 3 || calls[0].PrivateKey == nil || len(calls[1].Peers) != 1 || *calls[1].Peers[0].PersistentKeepaliveInterval != 0 {
		t.Fatalf("calls after a key change: %+v", calls)
	}
}
