package probe

import (
	"errors"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestMessageRoundTrip(t *testing.T) {
	a, _ := wgtypes.GeneratePrivateKey()
	b, _ := wgtypes.GeneratePrivateKey()
	ka, err := PairKey(a, b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := PairKey(b, a.PublicKey())
	if ka != kb {
		t.Fatal("the two sides derive different pair keys")
	}
	m := Message{Type: TypePong, From: a.PublicKey(), To: b.PublicKey(), TxID: [12]byte{1, 2, 3},
		Addrs: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.30:5418"), netip.MustParseAddrPort("[2001:db8::7]:5418")}}
	pkt := m.Encode(nil, &ka)
	if to, ok := Destination(pkt); !ok || to != b.PublicKey() {
		t.Errorf("Destination = %v, %v", to, ok)
	}
	got, err := Decode(pkt, &kb)
	if err != nil || got.Type != TypePong || got.From != a.PublicKey() || got.TxID != m.TxID || len(got.Addrs) != 2 || got.Addrs[0] != m.Addrs[0] || got.Addrs[1] != m.Addrs[1] {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
	// Any change, or another pair's key: refused.
	for i := range pkt {
		bad := append([]byte(nil), pkt...)
		bad[i] ^= 1
		if _, err := Decode(bad, &kb); !errors.Is(err, ErrBadMessage) {
			t.Fatalf("a message changed at byte %d was accepted", i)
		}
	}
	c, _ := wgtypes.GeneratePrivateKey()
	kc, _ := PairKey(c, a.PublicKey())
	if _, err := Decode(pkt, &kc); err == nil {
		t.Error("another pair's key authenticated the message")
	}
	// A WireGuard message is no probe.
	wg := make([]byte, 148)
	wg[0] = 1
	if IsProbe(wg) {
		t.Error("a WireGuard initiation passed for a probe")
	}
}

// TestPingAndPong: two probers on a memory network: a ping is answered
// with a pong that names where it came from and its round trip; a node
// not in the cluster, or a forged pong, gets nothing.
func TestPingAndPong(t *testing.T) {
	a, _ := wgtypes.GeneratePrivateKey()
	b, _ := wgtypes.GeneratePrivateKey()
	addrA, addrB := netip.MustParseAddrPort("198.51.100.1:5418"), netip.MustParseAddrPort("203.0.113.2:5418")
	var pa, pb *Prober
	pa = NewProber(a, func(pkt []byte, to netip.AddrPort) error { pb.Receive(pkt, addrA); return nil }, nil)
	pb = NewProber(b, func(pkt []byte, to netip.AddrPort) error { pa.Receive(pkt, addrB); return nil }, nil)
	pa.SetPeers([]wgtypes.Key{b.PublicKey()})
	pb.SetPeers([]wgtypes.Key{a.PublicKey()})
	pa.SetCandidates([]netip.AddrPort{netip.MustParseAddrPort("192.168.100.2:5418")})
	var pongs []Pong
	var cands []netip.AddrPort
	pa.OnPong = func(p Pong) { pongs = append(pongs, p) }
	pb.OnCandidates = func(peer wgtypes.Key, addrs []netip.AddrPort) { cands = addrs }
	if err := pa.Ping(b.PublicKey(), addrB); err != nil {
		t.Fatal(err)
	}
	if len(pongs) != 1 || pongs[0].Peer != b.PublicKey() || pongs[0].At != addrB || pongs[0].Observed != addrA {
		t.Fatalf("pongs = %+v", pongs)
	}
	if len(cands) != 1 || cands[0].String() != "192.168.100.2:5418" {
		t.Errorf("b learned a's candidates %v", cands)
	}
	// b does not answer a node it does not know.
	pb.SetPeers(nil)
	pa.Ping(b.PublicKey(), addrB)
	if len(pongs) != 1 {
		t.Error("a node outside the cluster was answered")
	}
}
