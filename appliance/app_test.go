package appliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/poll"
	"github.com/wgk3s/wgk3s/status"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// started returns an App started on fakes with the first 2 nodes of a
// 3-node cluster, and the number of events its start recorded.
func started(t *testing.T) (*fakes, *App, *cluster, int) {
	t.Helper()
	f := newFakes()
	a := newApp(t, f)
	c := newCluster(t, 3)
	if err := a.Start(context.Background(), c.plan(t, 2, 0, nil)); err != nil {
		t.Fatal(err)
	}
	return f, a, c, len(f.j.all())
}

func TestStartThenStopInOrder(t *testing.T) {
	f := newFakes()
	a := newApp(t, f)
	p := newCluster(t, 3).plan(t, 3, 0, nil)
	if err := a.Start(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	want := []string{
		memoryLimit(3),
		"status listen",
		"orphan k3s stopped (grace 30s)", // a killed run's k3s goes first
		"firewall cleanup",               // and its rules
		"wireguard open wg0 peers=2",
		"firewall set rules=13",
		"token created agent-token", // the master makes the agent token before k3s reads it
		"k3s new " + strings.Join(p.K3s.Args, " "),
		"sync listen 192.168.2.1:5419 on wg0", // the master serves the file over wg0
	}
	if diff := cmp.Diff(want, f.j.all()); diff != "" {
		t.Errorf("start (-want +got):\n%s", diff)
	}
	r, err := status.Fetch(a.opts.StatusSocket)
	if err != nil {
		t.Fatalf("the status socket does not answer while running: %v", err)
	}
	if r.Node != "node-0" || len(r.Peers) != 2 || r.Firewall.Egress != "eth0" {
		t.Errorf("status = %+v", r)
	}
	n := len(f.j.all())
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"k3s stop", "firewall stop", "firewall cleanup", "wireguard stop"}, f.j.since(n)); diff != "" {
		t.Errorf("stop order (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(a.opts.StatusSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("status socket after stop: %v", err)
	}
	select {
	case <-a.Done():
	default:
		t.Error("Done is not closed after Stop")
	}
	if err := a.Stop(); err != nil || a.Err() != nil {
		t.Errorf("a second Stop = %v, Err = %v; want nil, nil", err, a.Err())
	}
}

func TestStartFailureUndoesTheStepsBefore(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fakes, a *App, c *cluster)
		want  string   // in the error
		after []string // every event, in order
	}{
		{
			name: "another appliance serves the status socket",
			setup: func(t *testing.T, f *fakes, a *App, c *cluster) {
				l, err := status.Listen(a.opts.StatusSocket)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						c.Close()
					}
				}()
			},
			want:  "another running appliance",
			after: []string{memoryLimit(2)},
		},
		{
			name: "metrics port in use",
			setup: func(t *testing.T, f *fakes, a *App, c *cluster) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				c.extra = "metrics:\n  enabled: true\n  listen: " + l.Addr().String() + "\n"
			},
			want:  "metrics.listen",
			after: []string{memoryLimit(2), "status listen", "orphan k3s stopped (grace 30s)", "metrics listen"},
		},
		{
			name:  "no iptables",
			setup: func(t *testing.T, f *fakes, a *App, c *cluster) { f.failFirewallNew = errBoom },
			want:  "firewall: boom",
			after: []string{memoryLimit(2), "status listen", "orphan k3s stopped (grace 30s)"},
		},
		{
			name:  "leftover rules cannot be removed",
			setup: func(t *testing.T, f *fakes, a *App, c *cluster) { f.failCleanUp = errBoom },
			want:  "removing a previous run's firewall rules: boom",
			after: []string{memoryLimit(2), "status listen", "orphan k3s stopped (grace 30s)", "firewall cleanup failed"},
		},
		{
			name:  "wg0 cannot be created",
			setup: func(t *testing.T, f *fakes, a *App, c *cluster) { f.failOpen = errBoom },
			want:  "bringing up wg0: boom",
			after: []string{memoryLimit(2), "status listen", "orphan k3s stopped (grace 30s)", "firewall cleanup", "wireguard open failed"},
		},
		{
			name:  "firewall rules cannot be applied",
			setup: func(t *testing.T, f *fakes, a *App, c *cluster) { f.failSet[1] = errBoom },
			want:  "applying firewall rules: boom",
			after: []string{memoryLimit(2), "status listen", "orphan k3s stopped (grace 30s)", "firewall cleanup", "wireguard open wg0 peers=1",
				"firewall set failed", "firewall cleanup", "wireguard stop"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes()
			a := newApp(t, f)
			c := newCluster(t, 2)
			tt.setup(t, f, a, c)
			err := a.Start(context.Background(), c.plan(t, 2, 0, nil))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start = %v, want an error with %q", err, tt.want)
			}
			if diff := cmp.Diff(tt.after, f.j.all()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			select {
			case <-a.Done():
			default:
				t.Error("Done is not closed after a failed Start")
			}
			if tt.name != "another appliance serves the status socket" {
				// The socket was released: a new appliance could start.
				l, err := status.Listen(a.opts.StatusSocket)
				if err != nil {
					t.Errorf("status socket still held after a failed start: %v", err)
				} else {
					l.Close()
				}
			}
		})
	}
}

func TestReloadAppliesTheDifference(t *testing.T) {
	f, a, c, n := started(t)
	// A new node: only wg0 changes; the rules are the same and k3s keeps running.
	next := c.plan(t, 3, 0, nil)
	if err := a.Reload(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"wireguard apply peers=2 mtu=1420", memoryLimit(3)}, f.j.since(n)); diff != "" {
		t.Errorf("adding a node (-want +got):\n%s", diff)
	}
	if a.Plan() != next {
		t.Error("the App does not keep the applied plan")
	}
	// New k3s flags: k3s restarts with them.
	n = len(f.j.all())
	flags := c.plan(t, 3, 0, func(s string) string { return s + "  server_args: [--disable, traefik]\n" })
	if err := a.Reload(context.Background(), flags); err != nil {
		t.Fatal(err)
	}
	got := f.j.since(n)
	if len(got) != 3 || !strings.HasPrefix(got[2], "k3s restart server") || !strings.HasSuffix(got[2], "--disable traefik") {
		t.Errorf("changing server_args: events %q, want wg0 apply, memory limit, k3s restart", got)
	}
	if r := a.Report(); r.Reloads.Total != 2 || r.Reloads.Failures != 0 {
		t.Errorf("reloads = %+v, want 2 and no failure", r.Reloads)
	}
}

func TestReloadFirewallFailureRevertsTunnel(t *testing.T) {
	f, a, c, n := started(t)
	old := a.Plan()
	f.failSet[2] = errBoom // the reload's Set; the start's was the first
	next := c.plan(t, 3, 0, func(s string) string { return s + "firewall:\n  masquerade: false\n" })
	err := a.Reload(context.Background(), next)
	if err == nil || !strings.Contains(err.Error(), "applying firewall rules (rolled back): boom") {
		t.Fatalf("Reload = %v, want the firewall failure, rolled back", err)
	}
	want := []string{
		"wireguard apply peers=2 mtu=1420",
		"firewall set failed",
		"wireguard apply peers=1 mtu=1420", // back to the kept plan
		"firewall set rules=13",
	}
	if diff := cmp.Diff(want, f.j.since(n)); diff != "" {
		t.Errorf("reload (-want +got):\n%s", diff)
	}
	if got := f.tun.config(); len(got.Peers) != 1 {
		t.Errorf("wg0 has %d peers after the rollback, want 1", len(got.Peers))
	}
	if !f.fw.state().Equal(old.Firewall) {
		t.Error("the firewall was not put back to the running plan's rules")
	}
	if a.Plan() != old {
		t.Error("the running plan changed after a failed reload")
	}
	if r := a.Report(); r.Reloads.Failures != 1 || !strings.Contains(r.Reloads.Last, "boom") {
		t.Errorf("reloads = %+v, want one failure with the reason", r.Reloads)
	}
}

func TestReloadTunnelFailureTouchesNothingElse(t *testing.T) {
	f, a, c, n := started(t)
	f.failApply[1] = errBoom
	err := a.Reload(context.Background(), c.plan(t, 3, 0, func(s string) string { return s + "firewall:\n  masquerade: false\n" }))
	if err == nil || !strings.Contains(err.Error(), "applying to wg0 (rolled back): boom") {
		t.Fatalf("Reload = %v", err)
	}
	if diff := cmp.Diff([]string{"wireguard apply failed"}, f.j.since(n)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestReloadThatNeedsARestartChangesNothing(t *testing.T) {
	tests := []struct{ name, after, add, field string }{
		{"interface name", "  listen_port: 5418\n", "  name: wg1\n", "interface.name"},
		{"mode", "  listen_port: 5418\n", "  mode: kernel\n", "interface.mode"},
		{"backend", "", "firewall:\n  backend: nft\n", "firewall.backend"},
		{"metrics", "", "metrics:\n  enabled: true\n", "metrics"},
		{"grace", "  binary: /usr/local/bin/k3s\n", "  stop_grace_period: 5s\n", "k3s.stop_grace_period"},
		{"batch size", "", "runtime:\n  batch_size: 16\n", "runtime.batch_size"},
		{"inflight", "", "runtime:\n  inflight_packets: 512\n", "runtime.inflight_packets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, a, c, n := started(t)
			old := a.Plan()
			next := c.plan(t, 3, 0, func(s string) string {
				if tt.after == "" {
					return s + tt.add
				}
				return strings.Replace(s, tt.after, tt.after+tt.add, 1)
			})
			next.Mode = old.Mode // a fake host: the mode choice is not what this tests
			next.Problems = nil
			err := a.Reload(context.Background(), next)
			if !errors.Is(err, ErrRestartRequired) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Reload = %v, want a restart-required error naming %s", err, tt.field)
			}
			if got := f.j.since(n); len(got) != 0 {
				t.Errorf("a reload needing a restart did %q", got)
			}
			if a.Plan() != old {
				t.Error("the running plan changed")
			}
		})
	}
}

func TestReloadWithHostProblemsChangesNothing(t *testing.T) {
	f, a, c, n := started(t)
	bad := NewPlan(c.config(t, 3, 0, nil), fakeHost{preflightErr: errors.New("k3s.binary /usr/local/bin/k3s is missing")})
	if err := a.Reload(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("Reload = %v", err)
	}
	if got := f.j.since(n); len(got) != 0 {
		t.Errorf("a reload with a host problem did %q", got)
	}
}

func TestPartFailureStopsTheOthers(t *testing.T) {
	for _, part := range []string{"k3s", "wireguard"} {
		t.Run(part, func(t *testing.T) {
			f := newFakes()
			a := newApp(t, f)
			if err := a.Start(context.Background(), newCluster(t, 2).plan(t, 2, 0, nil)); err != nil {
				t.Fatal(err)
			}
			n := len(f.j.all())
			var want []string
			switch part {
			case "k3s":
				f.k3s.fail <- errBoom
				want = []string{"k3s exited", "firewall stop", "firewall cleanup", "wireguard stop"}
			case "wireguard":
				f.tun.fail <- errBoom
				want = []string{"k3s stop", "firewall stop", "firewall cleanup"}
			}
			select {
			case <-a.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the App did not stop after a part failed")
			}
			err := a.Err()
			if err == nil || !strings.Contains(err.Error(), part+" stopped unexpectedly: boom") || strings.Count(err.Error(), "boom") != 1 {
				t.Errorf("Err = %v, want the failed part's error once", err)
			}
			if diff := cmp.Diff(want, f.j.since(n)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if err := a.Stop(); err != nil {
				t.Errorf("Stop after a failure = %v", err)
			}
			if err := a.Reload(context.Background(), a.Plan()); !errors.Is(err, ErrNotRunning) {
				t.Errorf("Reload after a failure = %v, want ErrNotRunning", err)
			}
		})
	}
}

func TestRecreatedTunnelRestartsK3s(t *testing.T) {
	f := newFakes()
	a := newApp(t, f)
	if err := a.Start(context.Background(), newCluster(t, 2).plan(t, 2, 0, nil)); err != nil {
		t.Fatal(err)
	}
	n := len(f.j.all())
	f.tun.onRecreate()
	if diff := cmp.Diff([]string{"k3s restart"}, f.j.since(n)); diff != "" {
		t.Errorf("after wg0 was recreated (-want +got):\n%s", diff)
	}
}

// memoryLimit is the journal entry of the default memory limit applied for
// a cluster of nodes.
func memoryLimit(nodes int) string {
	return fmt.Sprintf("memory limit %d", configs.DefaultMemoryLimit+nodes*configs.DefaultMemoryLimitPerNode)
}

// TestStatusAnswersDuringALongReload: a reload that holds the device (a
// 5000-node file) does not keep `appliance status` from answering; the
// report says a reload is being applied.
func TestStatusAnswersDuringALongReload(t *testing.T) {
	f, a, c, _ := started(t)
	f.applyBlock = make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- a.Reload(context.Background(), c.plan(t, 3, 0, nil)) }()
	if !poll.Until(5*time.Second, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return !a.reloads.Running.IsZero()
	}) {
		t.Fatal("the reload did not begin")
	}
	began := time.Now()
	r, err := status.Fetch(a.opts.StatusSocket)
	if err != nil {
		t.Fatalf("status during a reload: %v", err)
	}
	// The README's bound: status answers within a second, with the last
	// report while the node is busy (on a loaded host a fresh one took 5 s).
	if took := time.Since(began); took > time.Second {
		t.Errorf("status took %v during a reload, want at most 1 s", took)
	}
	if r.Taken.IsZero() || !r.Taken.Before(began) || r.PeersUnavailable == "" || r.Reloads.Running.IsZero() {
		t.Errorf("the report during a blocked reload should be the last one made, saying a reload runs: %+v", r)
	}
	close(f.applyBlock)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := a.Report(); !r.Reloads.Running.IsZero() || len(r.Peers) != 2 {
		t.Errorf("after the reload: %+v", r)
	}
}
