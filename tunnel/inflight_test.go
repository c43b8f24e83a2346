package tunnel

import (
	"testing"
	"time"
)

func buffers(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 16)
	}
	return bufs
}

// admitted runs admit on a goroutine and reports whether it returned
// within d.
func admitted(f *inflight, d time.Duration) bool {
	done := make(chan struct{})
	go func() { f.admit(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestInflightBlocksAtMaxUntilAPacketLeaves: a read waits while max packets
// are in flight and goes on as soon as one is sent or written.
func TestInflightBlocksAtMaxUntilAPacketLeaves(t *testing.T) {
	f := newInflight(4, nil)
	defer f.close()
	bufs := buffers(4)
	f.enter(bufs[:3])
	if !admitted(f, time.Second) {
		t.Fatal("3 of 4 in flight: the read waited")
	}
	f.enter(bufs[3:])
	done := make(chan struct{})
	go func() { f.admit(); close(done) }()
	select {
	case <-done:
		t.Fatal("4 of 4 in flight: the read did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	// The same buffer read again is one packet, not two.
	f.enter(bufs[3:])
	if got := f.count(); got != 4 {
		t.Errorf("count = %d, want 4", got)
	}
	f.leave([][]byte{bufs[1][:8]}) // sent as a shorter slice of the same buffer
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("a packet left, but the waiting read did not go on")
	}
	f.leave(buffers(2)) // buffers never read (keepalives): nothing changes
	if got := f.count(); got != 3 {
		t.Errorf("count = %d, want 3", got)
	}
}

// TestInflightForgetsDroppedPackets: packets wireguard-go dropped are never
// sent; after inflightExpiry they no longer count, so drops cannot stop the
// tunnel.
func TestInflightForgetsDroppedPackets(t *testing.T) {
	now := time.Unix(1000, 0)
	f := newInflight(4, nil)
	f.now = func() time.Time { return now }
	defer f.close()
	f.enter(buffers(4))
	now = now.Add(inflightExpiry + time.Millisecond)
	if !admitted(f, 100*time.Millisecond) {
		t.Fatal("4 packets older than the expiry still block reads")
	}
	if got := f.count(); got != 0 {
		t.Errorf("count = %d after expiry, want 0", got)
	}
}

// TestInflightSaysWhenStalled: a read that waited the whole admission wait
// with no packet leaving goes on, and says so; one that got room does not.
func TestInflightSaysWhenStalled(t *testing.T) {
	stalls := make(chan struct{}, 4)
	f := newInflight(1, func() { stalls <- struct{}{} })
	f.wait = 20 * time.Millisecond
	defer f.close()
	bufs := buffers(1)
	f.enter(bufs)
	if !admitted(f, time.Second) {
		t.Fatal("the read did not go on after the admission wait")
	}
	select {
	case <-stalls:
	default:
		t.Fatal("a read that waited the whole admission wait was not reported")
	}
	f.wait = time.Second
	go func() { time.Sleep(10 * time.Millisecond); f.leave(bufs) }()
	if !admitted(f, time.Second) {
		t.Fatal("room was made, but the read did not go on")
	}
	if len(stalls) != 0 {
		t.Error("a read that got room was reported as stalled")
	}
}

// TestInflightWaitsEndOnClose: closing wg0 ends a waiting read.
func TestInflightWaitsEndOnClose(t *testing.T) {
	f := newInflight(1, nil)
	f.enter(buffers(1))
	done := make(chan struct{})
	go func() { f.admit(); close(done) }()
	f.close()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("close did not end the wait")
	}
}
