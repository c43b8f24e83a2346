package meshsync

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
)

func TestEndpointsRoundTrip(t *testing.T) {
	a, b := genKey(t).PublicKey(), genKey(t).PublicKey()
	eps := Endpoints{a: netip.MustParseAddrPort("203.0.113.44:40000"), b: netip.MustParseAddrPort("198.51.100.7:5418")}
	data := encodeEndpoints(eps)
	if string(data) != string(encodeEndpoints(Endpoints{b: eps[b], a: eps[a]})) {
		t.Error("the same endpoints encode differently")
	}
	got, err := decodeEndpoints(data)
	if err != nil || len(got) != 2 || got[a] != eps[a] || got[b] != eps[b] {
		t.Errorf("decoded %v, %v; want %v", got, err, eps)
	}
	for _, bad := range []string{"no-space\n", "notakey 1.2.3.4:5\n", a.String() + " 1.2.3.4\n"} {
		if _, err := decodeEndpoints([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// TestAFollowerLearnsWhereNodesAreSeen: the follower gets the endpoints
// at once, then each change within the long poll, and nothing when they
// did not change.
func TestAFollowerLearnsWhereNodesAreSeen(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "file")
	home := genKey(t).PublicKey()
	c.srv.SetEndpoints(Endpoints{home: netip.MustParseAddrPort("203.0.113.44:40000")})
	master := loopback(t, c.srv)
	cl := c.client(master, &node{})

	var mu sync.Mutex
	var got []Endpoints
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		cl.FollowEndpoints(ctx, func(eps Endpoints) { mu.Lock(); got = append(got, eps); mu.Unlock() })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	seen := func(n int, ap string) bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n && got[n-1][home] == netip.MustParseAddrPort(ap)
	}
	if !poll.Until(5*time.Second, func() bool { return seen(1, "203.0.113.44:40000") }) {
		t.Fatalf("the follower did not get the endpoints: %v", got)
	}
	c.srv.SetEndpoints(Endpoints{home: netip.MustParseAddrPort("203.0.113.44:40000")}) // the same: no news
	c.srv.SetEndpoints(Endpoints{home: netip.MustParseAddrPort("198.51.100.77:40000")})
	if !poll.Until(5*time.Second, func() bool { return seen(2, "198.51.100.77:40000") }) {
		t.Fatalf("the follower did not follow a change: %v", got)
	}
	polls := c.srv.Stats().Served
	// Nothing changes: the follower waits in its long poll, it does not ask in a loop.
	time.Sleep(200 * time.Millisecond) // a window to count requests in, not a wait for a condition
	if n := c.srv.Stats().Served - polls; n > 1 {
		t.Errorf("%d requests in 200 ms with nothing new", n)
	}
}

func TestAnEndpointsPollWaits(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "file")
	c.srv.wait = 50 * time.Millisecond
	req, _, _ := c.request(http.MethodGet, PathEndpoints+"?have="+Revision(nil), c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusNotModified {
		t.Errorf("no endpoints yet, asked with the empty list's revision: %d", w.Code)
	}
	k := genKey(t).PublicKey()
	c.srv.SetEndpoints(Endpoints{k: netip.MustParseAddrPort("203.0.113.44:40000")})
	req, _, _ = c.request(http.MethodGet, PathEndpoints+"?have="+Revision(nil), c.node, time.Now())
	w := serve(c.srv, req)
	if w.Code != http.StatusOK || w.Body.String() != k.String()+" 203.0.113.44:40000\n" {
		t.Errorf("after a change: %d %q", w.Code, w.Body.String())
	}
}
