package meshsync

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// keeper is a node's store of copies, in memory.
type keeper struct {
	mu     sync.Mutex
	copies [][]byte
	kept   int
}

func (k *keeper) Held() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.copies) == 0 {
		return ""
	}
	return Revision(k.copies[len(k.copies)-1])
}

func (k *keeper) Keep(sealed []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.copies = append(k.copies, sealed)
	k.kept++
	return nil
}

func (k *keeper) Newest() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.copies) == 0 {
		return nil, nil
	}
	return k.copies[len(k.copies)-1], nil
}

func (k *keeper) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kept
}

func followSnapshots(t *testing.T, c *Client, k *keeper) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.FollowSnapshots(ctx, k); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestANodeKeepsEachSnapshotAndTheMasterKnows: a node keeps every new
// snapshot once, the master learns it holds it, and a node that starts
// holding the current one does not fetch it again.
func TestANodeKeepsEachSnapshotAndTheMasterKnows(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "file")
	master := loopback(t, c.srv)
	if holders := c.srv.SnapshotHolders(); len(holders) != 0 {
		t.Errorf("holders before any snapshot: %v", holders)
	}
	k := &keeper{}
	followSnapshots(t, c.client(master, &node{}), k)
	for i, sealed := range []string{"sealed one", "sealed two"} {
		c.srv.SetSnapshot([]byte(sealed))
		if !poll.Until(10*time.Second, func() bool { return slices.Equal(c.srv.SnapshotHolders(), []string{"k3s-node-1"}) }) {
			t.Fatalf("snapshot %d: holders %v, kept %d", i, c.srv.SnapshotHolders(), k.count())
		}
		if k.count() != i+1 {
			t.Errorf("snapshot %d: kept %d copies, want %d", i, k.count(), i+1)
		}
	}
	// The same node restarted: it holds the current copy and waits.
	k2 := &keeper{copies: [][]byte{[]byte("sealed two")}}
	c2 := c.client(master, &node{})
	followSnapshots(t, c2, k2)
	c.srv.SetSnapshot([]byte("sealed three"))
	if !poll.Until(10*time.Second, func() bool { return k2.count() == 1 }) {
		t.Fatalf("the restarted node kept %d copies, want the new one only", k2.count())
	}
}

// TestARestoringMasterGetsEveryNodesCopy: each node offers its newest
// copy once (or that it keeps none), and no more while the master
// restores.
func TestARestoringMasterGetsEveryNodesCopy(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	second := genKey(t)
	nodes := []Node{c.nodeEntry(), {Name: "k3s-node-2", Key: second.PublicKey(), Addr: c.addr, Role: "agent"}}
	c.publish(t, "file", nodes...)
	c.srv.Restoring()
	master := loopback(t, c.srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen [][]string
	done := make(chan []Offer)
	go func() {
		offers, err := c.srv.AwaitOffers(ctx, time.Minute, func(o []Offer, missing []string) { seen = append(seen, missing) })
		if err != nil {
			t.Error(err)
		}
		done <- offers
	}()
	k := &keeper{copies: [][]byte{[]byte("old"), []byte("newest")}}
	followSnapshots(t, c.client(master, &node{}), k)
	empty := c.client(master, &node{})
	empty.Keys = func() (wgtypes.Key, wgtypes.Key) { return second, c.master.PublicKey() }
	followSnapshots(t, empty, &keeper{})
	offers := <-done
	if len(offers) != 2 || offers[0].Node != "k3s-node-1" || string(offers[0].Sealed) != "newest" || offers[1].Sealed != nil {
		t.Fatalf("offers = %+v", offers)
	}
	if len(seen) == 0 || len(seen[0]) == 0 {
		t.Errorf("progress never named the nodes still to offer: %v", seen)
	}
	c.srv.Restored()
	c.srv.SetSnapshot([]byte("after the restore"))
	if !poll.Until(10*time.Second, func() bool { return k.count() == 1 }) {
		t.Errorf("after the restore the node kept %d new copies, want 1", k.count())
	}
}
