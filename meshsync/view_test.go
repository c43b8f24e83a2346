package meshsync

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// The master's view is served to a node, authenticated, and its clock
// offset is known after the answer; a request without a node's key
// gets nothing.
func TestTheMastersViewAndTheClockOffset(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "one")
	master := loopback(t, c.srv)
	cl := c.client(master, &node{data: []byte("one")})
	cl.Now = func() time.Time { return time.Now().Add(-40 * time.Second) }
	if _, ok := cl.ClockOffset(); ok {
		t.Fatal("an offset before any answer")
	}
	if _, err := cl.View(context.Background(), 5*time.Second); err == nil {
		t.Fatal("a master that serves no view answered one")
	}
	c.srv.SetView(func() []byte { return []byte(`{"node":"master"}`) })
	got, err := cl.View(context.Background(), 5*time.Second)
	if err != nil || string(got) != `{"node":"master"}` {
		t.Fatalf("view: %q, %v", got, err)
	}
	off, ok := cl.ClockOffset()
	if !ok || off < 35*time.Second || off > 45*time.Second {
		t.Fatalf("the offset of a clock 40 s behind: %s (%v)", off, ok)
	}
	stranger := genKey(t)
	req, _, _ := c.request(http.MethodGet, PathView, stranger, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusForbidden || w.Body.Len() > 0 && w.Body.String() == `{"node":"master"}` {
		t.Fatalf("a stranger asked for the view: %d %q", w.Code, w.Body.String())
	}
}
