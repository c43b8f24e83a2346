//go:build linux

package testnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
)

// Proc is a background process started in a server.
type Proc struct {
	s    *Server
	name string
	cmd  interface {
		Wait() error
	}
	pid  int
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Start runs name in the server in the background. Its output is kept for
// Output and printed if the test fails. It is killed when the test ends.
func (s *Server) Start(name string, args ...string) *Proc {
	t := s.net.t
	t.Helper()
	cmd := s.Command(context.Background(), name, args...)
	p := &Proc{s: s, name: name, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting %s: %v", s.Name, name, err)
	}
	p.cmd, p.pid = cmd, cmd.Process.Pid
	if s.machine {
		// nsenter's child is the command.
		if !Eventually(10*time.Second, func() bool {
			kids := ChildPids(cmd.Process.Pid)
			if len(kids) == 1 {
				p.pid = kids[0]
			}
			return p.pid != cmd.Process.Pid
		}) {
			t.Fatalf("%s: %s did not start in the machine", s.Name, name)
		}
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.net.onCleanup(func() {
		if p.pid != cmd.Process.Pid {
			syscall.Kill(p.pid, syscall.SIGKILL) // nsenter's child, which holds the output
		}
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			fmt.Fprintf(os.Stderr, "--- output of %s on %s:\n%s\n", name, s.Name, p.out.String())
		}
	})
	return p
}

// Pid is the command's process id (nsenter execs it, or, in a machine,
// forks it).
func (p *Proc) Pid() int { return p.pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return syscall.Kill(p.pid, sig) }

// Wait waits up to timeout for the process to exit and returns its error.
func (p *Proc) Wait(timeout time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(timeout):
		return false, nil
	}
}

// Output returns what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitOutput polls until the output contains s or timeout passes.
func (p *Proc) WaitOutput(s string, timeout time.Duration) bool {
	return Eventually(timeout, func() bool { return strings.Contains(p.out.String(), s) })
}

// Eventually polls cond every 50 ms until it holds or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool { return poll.Until(timeout, cond) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
