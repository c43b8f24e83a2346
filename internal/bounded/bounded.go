// Package bounded runs the short helper programs the appliance asks
// things of (`k3s --version`, `systemctl is-active`, `iptables-save`) so
// that none can hold it: each runs in its own process group with a time
// limit, its output is read until it exits (and at most a second longer,
// even when a child it left behind holds the pipe), and whatever is left
// of its group afterwards is killed.
package bounded

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// pipeGrace is how long output is read after the program exited.
const pipeGrace = time.Second

// Output runs name with args for at most timeout and returns its standard
// output. env, if not nil, is its whole environment.
func Output(timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = pipeGrace
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.Output()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what it left running
	}
	switch {
	case errors.Is(err, exec.ErrWaitDelay):
		// It exited but left a child holding its output: what it printed
		// before it exited is all there is.
		return out, nil
	case ctx.Err() != nil:
		return out, fmt.Errorf("gave no answer within %s", timeout)
	}
	return out, err
}

// Run is Output without the output.
func Run(timeout time.Duration, name string, args ...string) error {
	_, err := Output(timeout, nil, name, args...)
	return err
}
