package tunnel

import (
	"context"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/poll"
)

var (
	mesh = netip.MustParsePrefix("192.168.2.0/24")
	pods = netip.MustParsePrefix("10.42.0.0/16")
)

// runTunnel runs tun.Run until the test ends; the channel is closed when
// Run returned, with its result in *err.
func runTunnel(t *testing.T, tun *Tunnel) (ended <-chan struct{}, err *error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var result error
	go func() { result = tun.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return")
		}
	})
	return done, &result
}

// TestFailClosedRoutesFollowTheNetworks: the mesh and the pod networks
// each have one; a crashed run's route for a network the file no longer
// has goes at open, an old network's at a reload, all at a clean stop.
func TestFailClosedRoutesFollowTheNetworks(t *testing.T) {
	r := newRig()
	stale := netip.MustParsePrefix("192.168.9.0/24") // a crashed run's, before the network changed
	r.h.holes[stale] = true
	tun := r.mustOpen(t, baseConfig(t, configs.ModeUserspace), Options{})
	if !r.h.holes[mesh] || !r.h.holes[pods] || r.h.holes[stale] || len(r.h.holes) != 2 {
		t.Fatalf("after open: %v, want %s and %s", r.h.holes, mesh, pods)
	}
	cfg := baseConfig(t, configs.ModeUserspace)
	cfg.Address = netip.MustParsePrefix("10.77.0.1/16")
	cfg.FailClosed = []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16"), pods}
	if err := tun.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.77.0.0/16"); !r.h.holes[want] || !r.h.holes[pods] || r.h.holes[mesh] || len(r.h.holes) != 2 {
		t.Errorf("after the network changed: %v, want only %s and %s", r.h.holes, want, pods)
	}
	tun.Close()
	if len(r.h.holes) != 0 {
		t.Errorf("a clean stop left %v", r.h.holes)
	}
}

func TestDeletedLinkIsRecreated(t *testing.T) {
	for _, mode := range []configs.Mode{configs.ModeUserspace, configs.ModeKernel} {
		t.Run(string(mode), func(t *testing.T) {
			r := newRig()
			recreated := make(chan struct{}, 1)
			tun := r.mustOpen(t, baseConfig(t, mode), Options{OnRecreate: func() { recreated <- struct{}{} }, LinkCheckInterval: time.Hour})
			runTunnel(t, tun)
			old := r.h.links["wg0"].index
			r.h.deleteBehindTheTunnelsBack("wg0")
			select {
			case <-recreated:
			case <-time.After(5 * time.Second):
				t.Fatal("the deleted link was not recreated")
			}
			r.h.mu.Lock()
			l := r.h.links["wg0"]
			r.h.mu.Unlock()
			if l == nil || l.index == old || !l.up || l.mtu != 1420 || len(l.addrs) != 1 || l.addrs[0].String() != "192.168.2.1/24" {
				t.Fatalf("recreated link = %+v", l)
			}
			if d, err := tun.Device(); err != nil || len(d.Peers) != 1 {
				t.Errorf("peers after recreation: %v, %v", d, err)
			}
			if !r.h.holes[mesh] || !r.h.holes[pods] {
				t.Error("the fail-closed route went with the link")
			}
			if tun.Recreations() != 1 {
				t.Errorf("Recreations = %d", tun.Recreations())
			}
			if idx, _ := readRecord(r.state, "wg0"); idx != l.index {
				t.Errorf("record %d, link %d", idx, l.index)
			}
		})
	}
}

// TestARecreationThatCannotBeConfiguredIsMadeAgain: `appliance cleanup
// --force` deletes wg0 and then its UAPI socket, which can be the one the
// recreation just made: configuring it fails. The link is made again
// rather than the appliance stopping (e2e TestCleanUpAfterACrashAndANetwork
// Change stopped so once in a make test beside a compile).
func TestARecreationThatCannotBeConfiguredIsMadeAgain(t *testing.T) {
	r := newRig()
	tun := r.mustOpen(t, baseConfig(t, configs.ModeUserspace), Options{LinkCheckInterval: time.Hour})
	ended, err := runTunnel(t, tun)
	r.wg.mu.Lock()
	r.wg.failOn = len(r.wg.calls) + 1 // the recreation's configuration
	r.wg.mu.Unlock()
	r.h.mu.Lock()
	// And a TUN device by that name still going (seen once at make test).
	r.h.fail["createUserspace"] = syscall.EBUSY
	r.h.mu.Unlock()
	r.h.deleteBehindTheTunnelsBack("wg0")
	if !poll.Until(5*time.Second, func() bool { return tun.Recreations() == 1 }) {
		select {
		case <-ended:
			t.Fatalf("Run stopped: %v", *err)
		default:
			t.Fatal("the link was not made again")
		}
	}
	if d, err := tun.Device(); err != nil || len(d.Peers) != 1 {
		t.Errorf("peers after the second recreation: %v, %v", d, err)
	}
	if r.h.userClosed < 1 {
		t.Error("the half-made link was not closed before the next")
	}
}

func TestPeriodicCheckFindsADeletedLink(t *testing.T) {
	r := newRig()
	tun := r.mustOpen(t, baseConfig(t, configs.ModeUserspace), Options{LinkCheckInterval: 10 * time.Millisecond})
	runTunnel(t, tun)
	r.h.mu.Lock()
	delete(r.h.links, "wg0") // no netlink event
	r.h.mu.Unlock()
	if !poll.Until(5*time.Second, func() bool { return tun.Recreations() == 1 }) {
		t.Fatal("the periodic check did not recreate the link")
	}
}

func TestAnotherLinkTakingTheNameStopsTheTunnel(t *testing.T) {
	r := newRig()
	tun := r.mustOpen(t, baseConfig(t, configs.ModeKernel), Options{LinkCheckInterval: time.Hour})
	ended, err := runTunnel(t, tun)
	r.h.mu.Lock()
	r.h.links["wg0"] = &fakeLink{kind: "veth", index: 999}
	r.h.mu.Unlock()
	r.h.deleted <- struct{}{}
	select {
	case <-ended:
		if !errors.Is(*err, ErrNotOurs) {
			t.Errorf("Run = %v, want ErrNotOurs", *err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run went on with a foreign link under its name")
	}
	if r.h.links["wg0"].kind != "veth" {
		t.Error("the foreign link was touched")
	}
}
