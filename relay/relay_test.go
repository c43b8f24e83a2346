package relay

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// relayed is two wireguard-go nodes whose only way to each other is the
// relay: each has the other's endpoint set to the relay's address.
func relayed(t *testing.T) (n *memNet, a, b *wgNode) {
	t.Helper()
	n = newMemNet()
	n.relay = netip.MustParseAddrPort("203.0.113.10:5418")
	rk, _ := wgtypes.GeneratePrivateKey()
	a = newWGNode(t, n, "198.51.100.1:5418", "192.168.2.3")
	b = newWGNode(t, n, "198.51.100.2:5418", "192.168.2.4")
	n.router = New(rk.PublicKey(), nil)
	n.router.SetNodes([]Node{{Key: a.key.PublicKey(), Endpoint: a.addr}, {Key: b.key.PublicKey(), Endpoint: b.addr}}, nil)
	a.peer(t, b, n.relay)
	b.peer(t, a, n.relay)
	return n, a, b
}

// TestTwoNodesTalkThroughTheRelayWhichSeesCiphertextOnly: real WireGuard
// handshakes and data between two nodes go through the router, which
// forwards them by mac1 and index without a key to decrypt them: what it
// forwarded is WireGuard's encrypted messages, and the ping's bytes are
// in none of them.
func TestTwoNodesTalkThroughTheRelayWhichSeesCiphertextOnly(t *testing.T) {
	n, a, b := relayed(t)
	if !a.ping(t, b) {
		t.Fatal("a -> b through the relay: no answer")
	}
	if !b.ping(t, a) {
		t.Fatal("b -> a through the relay: no answer")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	types := map[uint32]int{}
	icmp := tuntest.Ping(b.ip, a.ip)[20:] // the echo request without its IP header
	for _, pkt := range n.seen {
		types[messageType(pkt)]++
		if bytes.Contains(pkt, icmp) {
			t.Error("the relay forwarded the ping in the clear")
		}
	}
	if types[typeInitiation] == 0 || types[typeResponse] == 0 || types[typeTransport] < 2 || len(types) != 3 {
		t.Errorf("forwarded message types %v: want initiations, responses and transport only", types)
	}
	if st := n.router.Stats(); st.Packets != uint64(len(n.seen)) || st.Entries != 2 {
		t.Errorf("stats %+v: %d forwarded, want 2 index entries (one per side)", st, len(n.seen))
	}
}

// handshake builds an initiation for key, as a node would send it.
func initiationFor(key wgtypes.Key, sender uint32) []byte {
	pkt := make([]byte, sizeInitiation)
	pkt[0] = typeInitiation
	pkt[4], pkt[5] = byte(sender), byte(sender>>8)
	k := mac1Key(key)
	h := mac1For(&k, pkt, mac1Initiation)
	copy(pkt[mac1Initiation:], h)
	return pkt
}

// mac1For computes a mac1, as a node does.
func mac1For(key *[blake2s.Size]byte, msg []byte, off int) []byte {
	h, _ := blake2s.New128(key[:])
	h.Write(msg[:off])
	return h.Sum(nil)
}

func TestTheRelaysLimits(t *testing.T) {
	self, _ := wgtypes.GeneratePrivateKey()
	dst, _ := wgtypes.GeneratePrivateKey()
	clock := time.Unix(1_800_000_000, 0)
	r := New(self.PublicKey(), func() time.Time { return clock })
	from := netip.MustParseAddrPort("198.51.100.1:5418")
	to := netip.MustParseAddrPort("198.51.100.2:5418")
	r.SetNodes([]Node{{Key: dst.PublicKey(), Endpoint: to}, {Key: self.PublicKey(), Endpoint: from}}, []netip.Addr{netip.MustParseAddr("203.0.113.10")})
	r.SetNodes([]Node{{Key: dst.PublicKey(), Endpoint: to}, {Key: [32]byte{9}, Endpoint: from}}, []netip.Addr{netip.MustParseAddr("203.0.113.10")})

	if d := r.Route(initiationFor(self.PublicKey(), 1), from); d.Action != Local {
		t.Errorf("an initiation for the relay itself: %+v, want Local", d)
	}
	other, _ := wgtypes.GeneratePrivateKey()
	if d := r.Route(initiationFor(other.PublicKey(), 2), from); d.Action != Local {
		t.Errorf("an initiation for no node of the cluster: %+v, want Local (WireGuard drops it)", d)
	}
	if d := r.Route(initiationFor(dst.PublicKey(), 3), netip.MustParseAddrPort("192.0.2.99:1")); d.Action != Drop {
		t.Errorf("an initiation from an address no node is seen at: %+v, want Drop", d)
	}
	if d := r.Route(initiationFor(dst.PublicKey(), 4), from); d.Action != Forward || d.To != to {
		t.Errorf("an initiation for a node: %+v, want Forward to %s", d, to)
	}
	// A transport packet for an index no handshake made: not forwarded.
	tp := make([]byte, 64)
	tp[0] = typeTransport
	tp[4] = 77
	if d := r.Route(tp, to); d.Action != Local {
		t.Errorf("a transport packet for an unknown index: %+v", d)
	}
	// Past the burst, handshakes from one source are dropped.
	dropped := 0
	for i := range 200 {
		if r.Route(initiationFor(dst.PublicKey(), uint32(100+i)), from).Action == Drop {
			dropped++
		}
	}
	if dropped < 200-handshakeBurst {
		t.Errorf("%d of 200 initiations in a burst dropped, want at least %d", dropped, 200-handshakeBurst)
	}
	// Pending indexes expire; the table stays bounded.
	clock = clock.Add(time.Hour)
	r.mu.Lock()
	r.expire()
	left := len(r.index)
	r.mu.Unlock()
	if left != 0 {
		t.Errorf("%d index entries left an hour later", left)
	}
	// Never to the relay host itself.
	r.SetNodes([]Node{{Key: dst.PublicKey(), Endpoint: netip.MustParseAddrPort("203.0.113.10:22")}, {Key: [32]byte{9}, Endpoint: from}}, []netip.Addr{netip.MustParseAddr("203.0.113.10")})
	if d := r.Route(initiationFor(dst.PublicKey(), 500), from); d.Action != Drop {
		t.Errorf("a node said to be at the relay's own address: %+v, want Drop", d)
	}
}
