package supervisor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/bounded"
	"golang.org/x/sys/unix"
)

// Options configure a Supervisor. Zero durations take the defaults.
type Options struct {
	Logger *slog.Logger
	// StopGrace is the time between SIGTERM and SIGKILL (default 30 s).
	StopGrace time.Duration
	// BackoffMin and BackoffMax bound the restart delay, which doubles
	// after each quick exit (defaults 1 s and 30 s).
	BackoffMin, BackoffMax time.Duration
	// ResetAfter is how long the child must run for the delay to go back to
	// BackoffMin (default 1 min).
	ResetAfter time.Duration
	// WaitFor, when set, are host:port addresses (the k3s servers' API
	// through the tunnel, the master's first): one must accept a TCP
	// connection before the first start. The child's --server then names
	// the one that answered (k3s's own load balancer finds the others).
	WaitFor []string
	// WaitTimeout bounds that wait (default 5 min); k3s then starts anyway
	// and retries by itself.
	WaitTimeout time.Duration
	// BeforeStart, if set, runs once before the first start (after
	// WaitFor), such as fetching a missing token; k3s starts when it
	// returns nil.
	BeforeStart func(ctx context.Context) error
	// StateFile records the running child (pid, start time, executable) so
	// that StopOrphan can stop it after an appliance crash ("" records
	// nothing).
	StateFile string
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.StopGrace, 30*time.Second)
	def(&o.BackoffMin, time.Second)
	def(&o.BackoffMax, 30*time.Second)
	def(&o.ResetAfter, time.Minute)
	def(&o.WaitTimeout, 5*time.Minute)
}

// Status is what the supervisor knows about the child, for `appliance status`.
type Status struct {
	Binary   string    `json:"binary"`
	Args     []string  `json:"args"`
	Running  bool      `json:"running"`
	PID      int       `json:"pid,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Restarts int       `json:"restarts"`
	LastExit string    `json:"last_exit,omitempty"`
	// NextStart is when a child that exited starts again (the restart
	// backoff); zero while one runs or none is due.
	NextStart time.Time `json:"next_start,omitzero"`
}

// Supervisor runs one child process (k3s) and keeps it running.
type Supervisor struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	binary string
	args   []string // as planned; Update compares with these
	// server is the API address (host:port) that answered the wait: the
	// child's --server names it (see pointServer).
	server string
	status Status
	// why is the reason of the restart asked for, logged once when it
	// happens; restart is signalled with it.
	why     string
	restart chan struct{}
	// tail is k3s's last lines (Tail), oldest first.
	tail []string
}

// tailLines is how many of k3s's lines Tail keeps.
const tailLines = 60

// New returns a supervisor for binary with args (argv without argv[0]).
func New(binary string, args []string, opts Options) *Supervisor {
	opts.setDefaults()
	return &Supervisor{opts: opts, log: opts.Logger, binary: binary, args: slices.Clone(args),
		restart: make(chan struct{}, 1)}
}

// Preflight checks that binary can be run and that no separately installed
// k3s service competes with the appliance. active reports whether a systemd
// unit is active (nil skips that check).
func Preflight(binary string, active func(unit string) bool) error {
	fi, err := os.Stat(binary)
	switch {
	case err != nil:
		return fmt.Errorf("k3s.binary %s is missing; fix: install k3s without letting it start itself: "+
			"curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_ENABLE=true INSTALL_K3S_SKIP_START=true sh -", binary)
	case fi.IsDir():
		return fmt.Errorf("k3s.binary %s is a directory; fix: set k3s.binary to the k3s executable, such as %s/k3s", binary, strings.TrimSuffix(binary, "/"))
	case !fi.Mode().IsRegular():
		return fmt.Errorf("k3s.binary %s is not a regular file; fix: set k3s.binary to the k3s executable", binary)
	case fi.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("k3s.binary %s is not executable; fix: chmod 755 %s", binary, binary)
	}
	if err := checkInterpreter(binary); err != nil {
		return err
	}
	if active == nil {
		return nil
	}
	for _, unit := range []string{"k3s.service", "k3s-agent.service"} {
		if active(unit) {
			return fmt.Errorf("%s is running: it and the appliance would both run k3s; fix: systemctl disable --now %s", unit, unit)
		}
	}
	return nil
}

// checkInterpreter refuses a script whose #! line names an interpreter that
// cannot run: exec would fail with a bare "no such file or directory".
func checkInterpreter(binary string) error {
	f, err := os.Open(binary)
	if err != nil {
		return fmt.Errorf("k3s.binary %s cannot be read: %w", binary, err)
	}
	defer f.Close()
	head := make([]byte, 256)
	n, _ := io.ReadFull(f, head)
	line, _, _ := strings.Cut(string(head[:n]), "\n")
	if !strings.HasPrefix(line, "#!") {
		return nil
	}
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		return fmt.Errorf("k3s.binary %s starts with an empty #! line; fix: name the interpreter or point k3s.binary at the k3s executable", binary)
	}
	fi, err := os.Stat(fields[0])
	if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("k3s.binary %s is a script for %s, which cannot run (missing or not executable); fix: install it or point k3s.binary at the k3s executable", binary, fields[0])
	}
	return nil
}

// SystemdUnitActive asks systemctl whether unit is active. Without systemd
// as init it reports false.
func SystemdUnitActive(unit string) bool {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return false
	}
	return bounded.Run(5*time.Second, "systemctl", "is-active", "--quiet", unit) == nil
}

// Status returns a snapshot of the child's state.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Binary, st.Args = s.binary, slices.Clone(s.args)
	return st
}

// Update changes the child's command line. If it differs from the running
// one, the child is restarted (gracefully) with it; otherwise nothing
// happens. It reports whether a restart was scheduled.
func (s *Supervisor) Update(binary string, args []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if binary == s.binary && slices.Equal(args, s.args) {
		return false
	}
	if binary == s.binary && s.status.Running && onlyServerDiffers(s.args, args) {
		// A running k3s has joined: the server it joined through matters
		// at its next start only (k3s's load balancer knows every server),
		// so a new master does not restart every node's k3s.
		s.args = slices.Clone(args)
		s.log.Info("k3s's --server changes at its next start; the running k3s keeps its connections", "server", serverOf(args))
		return false
	}
	s.binary, s.args = binary, slices.Clone(args)
	s.ask("its command line changed")
	return true
}

// onlyServerDiffers says whether a and b differ in --server's value
// alone.
func onlyServerDiffers(a, b []string) bool {
	return len(a) == len(b) && serverOf(a) != serverOf(b) &&
		slices.Equal(pointServer(slices.Clone(a), "x"), pointServer(slices.Clone(b), "x"))
}

// serverOf is --server's value ("" without one).
func serverOf(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--server" {
			return args[i+1]
		}
	}
	return ""
}

// Restart stops the child gracefully and starts it again with the same
// command line; why is logged once, when it happens.
func (s *Supervisor) Restart(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ask(why)
}

// ask signals a restart for why; the caller holds s.mu. Requests that
// come before the restart happens are one restart, with the first reason.
func (s *Supervisor) ask(why string) {
	select {
	case s.restart <- struct{}{}:
		s.why = why
	default:
	}
}

// reason returns (and forgets) why a restart was asked for.
func (s *Supervisor) reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	why := s.why
	s.why = ""
	return why
}

// Run starts the child and restarts it whenever it exits, with exponential
// backoff, until ctx is cancelled; then it stops the child (SIGTERM, then
// SIGKILL after the grace period) and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	if len(s.opts.WaitFor) > 0 {
		addr, err := s.waitForServer(ctx)
		if err != nil {
			return nil // cancelled while waiting
		}
		s.mu.Lock()
		s.server = addr
		s.mu.Unlock()
	}
	if s.opts.BeforeStart != nil {
		if err := s.opts.BeforeStart(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	// Every restart, asked for or after an exit, waits backoff when the
	// child ran less than ResetAfter, and the wait doubles each time: a
	// cause that keeps coming back (a crash loop, an interface that keeps
	// disappearing) is damped instead of restarting k3s in a loop.
	backoff := s.opts.BackoffMin
	for first := true; ; first = false {
		if !first {
			s.mu.Lock()
			s.status.Restarts++
			s.mu.Unlock()
		}
		binary, args := s.command()
		child, err := s.start(binary, args)
		if err != nil {
			s.log.Error("starting k3s failed", "err", err, "retry_in", backoff)
		} else {
			stopped, asked := s.wait(ctx, child)
			if stopped {
				return nil
			}
			if time.Since(child.started) >= s.opts.ResetAfter {
				backoff = s.opts.BackoffMin
				if asked {
					continue // a restart asked for after a long run: at once
				}
			}
			s.log.Warn("k3s will be restarted", "in", backoff)
		}
		s.mu.Lock()
		s.status.NextStart = time.Now().Add(backoff)
		s.mu.Unlock()
		// A restart asked for meanwhile is this one: it neither cuts the
		// wait short nor restarts the next child.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		s.mu.Lock()
		s.status.NextStart = time.Time{}
		s.mu.Unlock()
		select {
		case <-s.restart:
			s.reason()
		default:
		}
		backoff = min(backoff*2, s.opts.BackoffMax)
	}
}

func (s *Supervisor) command() (string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	args := slices.Clone(s.args)
	if s.server != "" {
		args = pointServer(args, s.server)
	}
	return s.binary, args
}

// child is one run of the process.
type child struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{} // closed when cmd.Wait returned
	err     error         // cmd.Wait's result
}

// outputDrain bounds how long the child's last output is forwarded after
// it exited: a descendant that inherited its stdout (a `sleep 120 &`) keeps
// the pipe open, and must hold up neither the exit nor a stop.
const outputDrain = time.Second

// start launches the process on a goroutine locked to its OS thread: Linux
// sends Pdeathsig when the *thread* that forked the child exits, so that
// thread must live exactly as long as the child is waited for.
//
// The child writes into pipes the supervisor made itself (*os.File), so
// cmd.Wait returns as soon as the process exits, whatever holds the pipes;
// the exit is reaped and reported at once.
func (s *Supervisor) start(binary string, args []string) (*child, error) {
	type started struct {
		c   *child
		err error
	}
	ch := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		outR, outW, err := os.Pipe()
		if err != nil {
			ch <- started{err: err}
			return
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			ch <- started{err: err}
			return
		}
		cmd := exec.Command(binary, args...)
		cmd.Env = childEnv(os.Environ())
		cmd.SysProcAttr = childAttr()
		cmd.Stdout, cmd.Stderr = outW, errW
		err = cmd.Start()
		outW.Close() // the child has its own copies
		errW.Close()
		if err != nil {
			outR.Close()
			errR.Close()
			ch <- started{err: err}
			return
		}
		c := &child{cmd: cmd, started: time.Now(), exited: make(chan struct{})}
		s.mu.Lock()
		s.status.Running, s.status.PID, s.status.Started = true, cmd.Process.Pid, c.started
		s.mu.Unlock()
		s.log.Info("k3s started", "pid", cmd.Process.Pid, "argv", strings.Join(append([]string{binary}, args...), " "))
		if s.opts.StateFile != "" {
			if err := writeRecord(s.opts.StateFile, cmd.Process.Pid); err != nil {
				s.log.Warn("cannot record the k3s child; after a crash of the appliance it may have to be stopped by hand", "err", err)
			}
		}
		ch <- started{c: c}
		var pipes sync.WaitGroup
		for _, r := range []*os.File{outR, errR} {
			pipes.Add(1)
			go func() { defer pipes.Done(); s.forward(r) }()
		}
		c.err = cmd.Wait()
		s.mu.Lock()
		s.status.Running, s.status.PID = false, 0
		s.mu.Unlock()
		drained := make(chan struct{})
		go func() { pipes.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(outputDrain):
			outR.Close() // unblocks the forwarders
			errR.Close()
			<-drained
		}
		outR.Close()
		errR.Close()
		close(c.exited)
	}()
	r := <-ch
	return r.c, r.err
}

// forward copies the child's output into the log, a line per record.
func (s *Supervisor) forward(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		s.log.Info(line, "component", "k3s")
		s.mu.Lock()
		if len(s.tail) == tailLines {
			s.tail = append(s.tail[:0], s.tail[1:]...)
		}
		s.tail = append(s.tail, line)
		s.mu.Unlock()
	}
}

// Tail returns k3s's last lines (stdout and stderr), oldest first: what
// `appliance doctor` reads when k3s is not Ready.
func (s *Supervisor) Tail() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tail)
}

// wait returns when the child exits (false, false), when ctx is cancelled
// and the child has been stopped (true, false), or when a restart was asked
// for and the child has been stopped (false, true).
func (s *Supervisor) wait(ctx context.Context, c *child) (stopped, restart bool) {
	select {
	case <-c.exited:
		s.recordExit(c, false)
		return false, false
	case <-ctx.Done():
		s.stopChild(c)
		return true, false
	case <-s.restart:
		s.log.Info("restarting k3s", "why", s.reason())
		s.stopChild(c)
		return false, true
	}
}

// stopChild sends SIGTERM, waits up to the grace period, then SIGKILL.
func (s *Supervisor) stopChild(c *child) {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(s.opts.StopGrace):
		s.log.Warn("k3s did not stop within the grace period; killing it", "grace", s.opts.StopGrace)
		c.cmd.Process.Kill()
		<-c.exited
	}
	s.recordExit(c, true)
}

func (s *Supervisor) recordExit(c *child, requested bool) {
	if s.opts.StateFile != "" {
		os.Remove(s.opts.StateFile)
	}
	desc := exitDescription(c.err)
	ran := time.Since(c.started).Round(time.Millisecond)
	s.mu.Lock()
	s.status.Running, s.status.PID, s.status.LastExit = false, 0, desc
	s.mu.Unlock()
	if requested {
		s.log.Info("k3s stopped", "status", desc, "ran", ran)
	} else {
		s.log.Warn("k3s exited", "status", desc, "ran", ran)
	}
}

func exitDescription(err error) string {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		if err == nil {
			return "exit status 0"
		}
		return err.Error()
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + signalName(ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ee.ExitCode())
}

// childEnv is the appliance's environment without what k3s must not see:
// NOTIFY_SOCKET (k3s would tell systemd it is ready in the appliance's
// name) and K3S_* variables (k3s reads its token, server URL and more from
// them, bypassing the cluster file; the token must never travel in env).
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "K3S_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// waitForServer polls the servers' API ports through the tunnel, all at
// once every second, until one accepts a connection, logging progress, for
// at most WaitTimeout. It returns the one that answered (the first listed
// when none did).
func (s *Supervisor) waitForServer(ctx context.Context) (string, error) {
	addrs := s.opts.WaitFor
	deadline := time.Now().Add(s.opts.WaitTimeout)
	s.log.Info("waiting for the k3s server through the tunnel before starting", "server", strings.Join(addrs, ", "))
	lastLog := time.Now()
	for attempt := 1; ; attempt++ {
		addr, err := dialAny(ctx, addrs)
		if err == nil {
			s.log.Info("k3s server is reachable", "server", addr, "attempts", attempt)
			return addr, nil
		}
		if time.Now().After(deadline) {
			s.log.Warn("k3s server still unreachable; starting anyway (k3s retries by itself)",
				"server", addrs[0], "waited", s.opts.WaitTimeout, "err", err)
			return addrs[0], nil
		}
		if time.Since(lastLog) >= 10*time.Second {
			s.log.Info("still waiting for the k3s server", "server", strings.Join(addrs, ", "), "attempts", attempt, "err", err)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// dialAny dials every address at once (2 s each) and returns the first,
// in list order, that accepted.
func dialAny(ctx context.Context, addrs []string) (string, error) {
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 2 * time.Second}
			conn, err := d.DialContext(ctx, "tcp", a)
			if err == nil {
				conn.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			return addrs[i], nil
		}
	}
	return "", errors.Join(errs...)
}

// pointServer makes the argument after --server https://ADDR (ADDR being
// one of the waited-for servers) name addr instead.
func pointServer(args []string, addr string) []string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--server" && strings.HasPrefix(args[i+1], "https://") {
			args[i+1] = "https://" + addr
		}
	}
	return args
}

// signalName is a signal's name as kill -l writes it (SIGKILL), not its
// description ("killed").
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}
