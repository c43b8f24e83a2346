package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/internal/poll"
)

// standin is the stand-in k3s, built once.
var standin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wgk3s-sup-")
	if err != nil {
		panic(err)
	}
	standin = filepath.Join(dir, "k3s")
	out, err := exec.Command("go", "build", "-o", standin, "github.com/wgk3s/wgk3s/internal/k3sstandin").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the stand-in k3s: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// No test may leave a goroutine running (a child's waiter, a forwarder).
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goroutine leak:", err)
		code = 1
	}
	os.Exit(code)
}

// recorder is a slog handler that keeps every record.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// find returns the records whose message contains msg.
func (r *recorder) find(msg string) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.recs {
		if strings.Contains(rec.Message, msg) {
			out = append(out, rec)
		}
	}
	return out
}

func attr(rec slog.Record, key string) string {
	var v string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

type running struct {
	sup     *Supervisor
	log     *recorder
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func start(t *testing.T, binary string, args []string, opts Options) *running {
	t.Helper()
	r := &running{log: &recorder{}, done: make(chan error, 1)}
	opts.Logger = slog.New(r.log)
	r.sup = New(binary, args, opts)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.sup.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		r.log.mu.Lock()
		for _, rec := range r.log.recs {
			t.Log(rec.Message, attr(rec, "err"), attr(rec, "status"))
		}
		r.log.mu.Unlock()
		t.Fatal("Run did not return after cancel")
	}
}

// exists reports whether pid is still a process, running or zombie: after
// a stop both are bugs.
func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return pid > 0 && err == nil
}

func TestRestartsWithBackoff(t *testing.T) {
	r := start(t, "/bin/sh", []string{"-c", "echo crashing; exit 7"}, Options{
		BackoffMin: 40 * time.Millisecond, BackoffMax: 160 * time.Millisecond, ResetAfter: time.Hour})
	if !poll.Until(10*time.Second, func() bool { return len(r.log.find("k3s started")) >= 6 }) {
		t.Fatalf("only %d starts", len(r.log.find("k3s started")))
	}
	starts := r.log.find("k3s started")
	// Delays between starts at least 40, 80, 160, 160 ms: doubling, capped.
	wantMin := []time.Duration{40, 80, 160, 160}
	for i, w := range wantMin {
		gap := starts[i+1].Time.Sub(starts[i].Time)
		if gap < w*time.Millisecond {
			t.Errorf("gap %d = %v, want at least %v", i, gap, w*time.Millisecond)
		}
	}
	exits := r.log.find("k3s exited")
	if len(exits) == 0 || attr(exits[0], "status") != "exit status 7" {
		t.Fatalf("exit not logged with its status: %+v", exits)
	}
	if out := r.log.find("crashing"); len(out) == 0 || attr(out[0], "component") != "k3s" {
		t.Errorf("child output not forwarded tagged k3s")
	}
	if st := r.sup.Status(); st.Restarts < 5 || st.LastExit != "exit status 7" {
		t.Errorf("status = %+v", st)
	}
}

// TestStatusSaysWhenKThreeSStartsAgain: during the backoff after an exit
// the status has the next start, so that `appliance status` says
// "restarting in N s", not "not running".
func TestStatusSaysWhenKThreeSStartsAgain(t *testing.T) {
	r := start(t, "/bin/sh", []string{"-c", "exit 3"}, Options{BackoffMin: time.Hour, BackoffMax: time.Hour, ResetAfter: time.Hour})
	var st Status
	if !poll.Until(10*time.Second, func() bool { st = r.sup.Status(); return !st.NextStart.IsZero() }) {
		t.Fatalf("no next start during the backoff: %+v", st)
	}
	if st.Running || time.Until(st.NextStart) < 50*time.Minute {
		t.Errorf("status during an hour's backoff: %+v", st)
	}
}

func TestBackoffResetsAfterALongRun(t *testing.T) {
	// Each run lasts 100ms, longer than ResetAfter: the delay stays at the minimum.
	r := start(t, "/bin/sh", []string{"-c", "sleep 0.1; exit 1"}, Options{
		BackoffMin: 30 * time.Millisecond, BackoffMax: 10 * time.Second, ResetAfter: 50 * time.Millisecond})
	if !poll.Until(10*time.Second, func() bool { return len(r.log.find("will be restarted")) >= 4 }) {
		t.Fatal("not restarted")
	}
	for _, rec := range r.log.find("will be restarted")[:4] {
		if got := attr(rec, "in"); got != "30ms" {
			t.Errorf("restart delay = %s after a long run, want 30ms", got)
		}
	}
}

func TestStopIsGracefulThenForced(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("tok\n"), 0o600)
	args := []string{"agent", "--server", "https://127.0.0.1:1", "--token-file", tok, "--node-name", "n"}

	t.Run("SIGTERM honoured", func(t *testing.T) {
		r := start(t, standin, args, Options{StopGrace: 10 * time.Second})
		poll.Until(5*time.Second, func() bool { return r.sup.Status().Running })
		pid := r.sup.Status().PID
		began := time.Now()
		r.stop(t)
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("stop took %v with a child that exits on SIGTERM", took)
		}
		if exists(pid) {
			t.Errorf("child %d still exists (running or zombie)", pid)
		}
		if st := r.sup.Status(); st.Running || st.Restarts != 0 {
			t.Errorf("status after stop = %+v; a requested stop is not a restart", st)
		}
	})
	t.Run("SIGKILL after the grace period", func(t *testing.T) {
		t.Setenv("WGK3S_STANDIN_IGNORE_TERM", "1")
		r := start(t, standin, args, Options{StopGrace: 300 * time.Millisecond})
		poll.Until(5*time.Second, func() bool { return r.sup.Status().Running })
		time.Sleep(100 * time.Millisecond) // let it install its signal handler
		pid := r.sup.Status().PID
		began := time.Now()
		r.stop(t)
		took := time.Since(began)
		if took < 300*time.Millisecond || took > 5*time.Second {
			t.Errorf("stop took %v, want about the 300ms grace", took)
		}
		if exists(pid) {
			t.Errorf("child %d survived SIGKILL", pid)
		}
		if len(r.log.find("did not stop within the grace period")) != 1 {
			t.Errorf("the kill was not logged")
		}
	})
}

func TestUpdateRestartsOnlyWhenArgvChanges(t *testing.T) {
	r := start(t, "/bin/sleep", []string{"100"}, Options{StopGrace: 5 * time.Second})
	poll.Until(5*time.Second, func() bool { return r.sup.Status().Running })
	pid := r.sup.Status().PID
	if r.sup.Update("/bin/sleep", []string{"100"}) {
		t.Fatal("Update with the same argv scheduled a restart")
	}
	time.Sleep(200 * time.Millisecond)
	if got := r.sup.Status().PID; got != pid {
		t.Fatalf("pid changed from %d to %d without an argv change", pid, got)
	}
	if !r.sup.Update("/bin/sleep", []string{"200"}) {
		t.Fatal("Update with a new argv did not schedule a restart")
	}
	if !poll.Until(5*time.Second, func() bool { st := r.sup.Status(); return st.Running && st.PID != pid }) {
		t.Fatal("not restarted with the new argv")
	}
	if diff := cmp.Diff([]string{"200"}, r.sup.Status().Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if exists(pid) {
		t.Errorf("old child %d still exists", pid)
	}
	if got := r.sup.Status().Restarts; got != 1 {
		t.Errorf("restarts = %d, want the argv change's 1", got)
	}
	if got := r.log.find("restarting k3s"); len(got) != 1 || attr(got[0], "why") != "its command line changed" {
		t.Errorf("restart logged %d times, why %q", len(got), attr(got[0], "why"))
	}
}

// TestRestartsAskedForAreDamped: an interface that keeps disappearing
// asks for a restart again and again; each one is counted and logged once
// with its reason, and a child that ran less than ResetAfter waits a
// doubling backoff before it starts again.
func TestRestartsAskedForAreDamped(t *testing.T) {
	r := start(t, "/bin/sleep", []string{"100"}, Options{StopGrace: 5 * time.Second, BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond})
	if !poll.Until(5*time.Second, func() bool { return r.sup.Status().Running }) {
		t.Fatal("not running")
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
	for i, min := range want {
		pid := r.sup.Status().PID
		began := time.Now()
		r.sup.Restart("the WireGuard interface was recreated")
		r.sup.Restart("the WireGuard interface was recreated") // one restart for both
		if !poll.Until(10*time.Second, func() bool { st := r.sup.Status(); return st.Running && st.PID != pid }) {
			t.Fatalf("restart %d did not happen", i+1)
		}
		if took := time.Since(began); took < min {
			t.Errorf("restart %d after %v; want at least the backoff %v", i+1, took, min)
		}
	}
	if got := r.sup.Status().Restarts; got != len(want) {
		t.Errorf("restarts = %d, want %d", got, len(want))
	}
	logged := r.log.find("restarting k3s")
	if len(logged) != len(want) {
		t.Errorf("%d restart reasons logged, want %d", len(logged), len(want))
	}
	for _, l := range logged {
		if attr(l, "why") != "the WireGuard interface was recreated" {
			t.Errorf("logged why %q", attr(l, "why"))
		}
	}
}

func TestChildEnvironment(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "K3S_TOKEN=secret", "K3S_URL=https://x", "HOME=/root"})
	if diff := cmp.Diff([]string{"PATH=/bin", "HOME=/root"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestWaitForServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := start(t, "/bin/sleep", []string{"100"}, Options{WaitFor: []string{l.Addr().String()}})
	if !poll.Until(10*time.Second, func() bool { return r.sup.Status().Running }) {
		t.Fatal("not started although the server answers")
	}
	if len(r.log.find("k3s server is reachable")) != 1 {
		t.Error("reachability not logged")
	}

	// Nothing listens: it waits the bounded time, says so, and starts anyway.
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l2.Addr().String()
	l2.Close()
	r2 := start(t, "/bin/sleep", []string{"100"}, Options{WaitFor: []string{closed}, WaitTimeout: 300 * time.Millisecond})
	if !poll.Until(10*time.Second, func() bool { return r2.sup.Status().Running }) {
		t.Fatal("not started after the wait timed out")
	}
	if len(r2.log.find("starting anyway")) != 1 {
		t.Error("timeout not logged")
	}
}

// upAndDown returns the address of a listener (closed when the test
// ends) and of a port where nothing listens.
func upAndDown(t *testing.T) (up, down string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down = l2.Addr().String()
	l2.Close()
	return l.Addr().String(), down
}

// TestWaitForAnyServer: with the first server down, the child starts
// against the one that answers.
func TestWaitForAnyServer(t *testing.T) {
	up, down := upAndDown(t)
	out := filepath.Join(t.TempDir(), "argv")
	r := start(t, "/bin/sh", []string{"-c", `echo "$@" > ` + out + `; exec sleep 100`, "sh", "agent", "--server", "https://" + down, "--node-ip", "192.168.2.9"},
		Options{WaitFor: []string{down, up}})
	if !poll.Until(10*time.Second, func() bool { b, _ := os.ReadFile(out); return len(b) > 0 }) {
		t.Fatal("not started although a server answers")
	}
	b, _ := os.ReadFile(out)
	if want := "agent --server https://" + up + " --node-ip 192.168.2.9\n"; string(b) != want {
		t.Errorf("argv = %q, want %q", b, want)
	}
	if len(r.log.find("k3s server is reachable")) != 1 {
		t.Error("reachability not logged")
	}
}

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "k3s-noexec")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	badInterp := filepath.Join(dir, "k3s-bad-interp")
	os.WriteFile(badInterp, []byte("#!/no/such/shell -e\necho hi\n"), 0o755)
	tests := []struct {
		name, binary string
		active       func(string) bool
		want         string
	}{
		{"missing", filepath.Join(dir, "nope"), nil, "INSTALL_K3S_SKIP_START=true"},
		{"directory", dir, nil, "is a directory; fix: set k3s.binary to the k3s executable"},
		{"bad interpreter", badInterp, nil, "a script for /no/such/shell, which cannot run"},
		{"not executable", noexec, nil, "chmod 755"},
		{"k3s.service running", standin, func(u string) bool { return u == "k3s.service" }, "systemctl disable --now k3s.service"},
		{"k3s-agent.service running", standin, func(u string) bool { return u == "k3s-agent.service" }, "systemctl disable --now k3s-agent.service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Preflight(tt.binary, tt.active)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Preflight = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if err := Preflight(standin, func(string) bool { return false }); err != nil {
		t.Errorf("Preflight on a good binary: %v", err)
	}
}

func TestExitDescription(t *testing.T) {
	err := exec.Command("/bin/sh", "-c", "kill -9 $$").Run()
	if got := exitDescription(err); got != "killed by SIGKILL" {
		t.Errorf("exitDescription = %q", got)
	}
	if got := exitDescription(errors.New("boom")); got != "boom" {
		t.Errorf("exitDescription = %q", got)
	}
}

// TestExitNoticedWhileADescendantHoldsTheOutput: a child whose descendant
// keeps stdout open must still be reaped, reported as not running and
// restarted, and a stop must not wait for the descendant.
func TestExitNoticedWhileADescendantHoldsTheOutput(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "k3s")
	script := "#!/bin/sh\necho started\nsleep 120 &\necho $! >> " + filepath.Join(dir, "sleepers") + "\nexit 3\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(dir, "sleepers"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	r := start(t, bin, nil, Options{BackoffMin: 200 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if !poll.Until(10*time.Second, func() bool { return r.sup.Status().Restarts >= 2 }) {
		t.Fatalf("exits not noticed: status %+v, %d exits logged", r.sup.Status(), len(r.log.find("k3s exited")))
	}
	if got := r.log.find("k3s exited"); len(got) < 2 || attr(got[0], "status") != "exit status 3" {
		t.Errorf("exit records: %d, first status %q", len(got), attr(got[0], "status"))
	}
	began := time.Now()
	r.stop(t)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("stop took %v while a descendant held the output", took)
	}
}

func TestRunningMeansAlive(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "k3s")
	script := "#!/bin/sh\nsleep 120 &\necho $! > " + filepath.Join(dir, "sleeper") + "\nexit 1\n"
	os.WriteFile(bin, []byte(script), 0o755)
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(dir, "sleeper"))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	r := start(t, bin, nil, Options{BackoffMin: time.Minute, BackoffMax: time.Minute})
	if !poll.Until(5*time.Second, func() bool { st := r.sup.Status(); return st.LastExit == "exit status 1" && !st.Running && st.PID == 0 }) {
		t.Fatalf("after the child exited: %+v", r.sup.Status())
	}
}

// TestPointedServerIsNoChange: the --server an agent started against is
// not a change of its command line: an Update with the planned argv does
// not restart it.
func TestPointedServerIsNoChange(t *testing.T) {
	up, down := upAndDown(t)
	args := []string{"-c", "exec sleep 100", "sh", "agent", "--server", "https://" + down}
	r := start(t, "/bin/sh", args, Options{WaitFor: []string{down, up}})
	if !poll.Until(10*time.Second, func() bool { return r.sup.Status().Running }) {
		t.Fatal("not started")
	}
	if r.sup.Update("/bin/sh", args) {
		t.Error("the planned argv again counts as a change")
	}
	if _, got := r.sup.command(); got[len(got)-1] != "https://"+up {
		t.Errorf("the child's argv = %q", got)
	}
}

// A new --server alone does not restart a running k3s (it joined; a new
// master must not restart every node's k3s); its next start uses it.
func TestANewServerAloneWaitsForTheNextStart(t *testing.T) {
	args := func(server string) []string { return []string{"-c", "sleep 100", "--server", server} }
	r := start(t, "/bin/sh", args("https://192.168.2.1:6443"), Options{StopGrace: 5 * time.Second})
	poll.Until(5*time.Second, func() bool { return r.sup.Status().Running })
	pid := r.sup.Status().PID
	if r.sup.Update("/bin/sh", args("https://192.168.2.2:6443")) {
		t.Fatal("a new --server alone restarted k3s")
	}
	if got := r.sup.Status(); got.PID != pid || !slices.Equal(got.Args, args("https://192.168.2.2:6443")) {
		t.Fatalf("pid %d (was %d), args %q", got.PID, pid, got.Args)
	}
	r.sup.Restart("a test")
	var cmdline []byte
	if !poll.Until(5*time.Second, func() bool {
		st := r.sup.Status()
		if !st.Running || st.PID == pid {
			return false
		}
		cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.PID))
		return len(cmdline) > 0
	}) || !strings.Contains(string(cmdline), "https://192.168.2.2:6443") {
		t.Fatalf("the next start's argv: %q", cmdline)
	}
	if !r.sup.Update("/bin/sh", []string{"-c", "sleep 200", "--server", "https://192.168.2.1:6443"}) {
		t.Fatal("another change with it did not restart k3s")
	}
}
