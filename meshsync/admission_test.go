package meshsync

import (
	"net/netip"
	"testing"
)

// TestEveryNodeReconnectingAtOnceIsLetIn: when a master restarts, each
// node of a large cluster opens its connection at the same moment; none of
// them is pushed out before it can prove itself (BenchmarkSync1000 lost 4
// of 1000 polls to the old fixed cap of 512 on a CI machine).
func TestEveryNodeReconnectingAtOnceIsLetIn(t *testing.T) {
	for _, tc := range []struct {
		nodes, conns, evicted int
	}{
		{nodes: 1000, conns: 1000, evicted: 0},
		{nodes: 1000, conns: UnprovenPerNode*1000 + 3, evicted: 3},
		{nodes: 3, conns: unprovenFloor, evicted: 0},
		{nodes: 3, conns: unprovenFloor + 1, evicted: 1},
	} {
		a := newAdmission()
		a.serving(tc.nodes)
		var first *admitted
		var evicted []*admitted
		for i := range tc.conns {
			c := &admitted{a: a, addr: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})}
			if first == nil {
				first = c
			}
			evicted = append(evicted, a.admit(c)...)
		}
		if len(evicted) != tc.evicted {
			t.Errorf("%d nodes, %d connections at once: %d pushed out, want %d", tc.nodes, tc.conns, len(evicted), tc.evicted)
		}
		if tc.evicted > 0 && len(evicted) > 0 && evicted[0] != first {
			t.Errorf("%d nodes, %d connections: the oldest was not the one pushed out", tc.nodes, tc.conns)
		}
	}
}
