package bounded

import (
	"os"

	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAChildHoldingTheOutputDoesNotHold: a `k3s --version` that leaves a
// background child behind returns at once with what it printed, and the
// child is gone.
func TestAChildHoldingTheOutputDoesNotHold(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := script(t, "sleep 120 &\necho $! > "+pidFile+"\necho 'k3s version v1.36.3+k3s1'\n")
	began := time.Now()
	out, err := Output(10*time.Second, nil, p)
	if err != nil || !strings.Contains(string(out), "v1.36.3+k3s1") {
		t.Fatalf("Output = %q, %v", out, err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("took %v; the background child held it", took)
	}
	b, _ := os.ReadFile(pidFile)
	pid := strings.TrimSpace(string(b))
	// SIGKILL is sent; the process is gone (or a zombie) once the kernel
	// has run its exit.
	if !poll.Until(10*time.Second, func() bool {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		return err != nil || strings.Contains(string(st), ") Z ")
	}) {
		t.Errorf("the background child %s still runs", pid)
	}
}

func TestATimeoutIsAnError(t *testing.T) {
	p := script(t, "exec sleep 120\n")
	began := time.Now()
	_, err := Output(200*time.Millisecond, nil, p)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

func TestExitStatusIsAnError(t *testing.T) {
	if err := Run(5*time.Second, script(t, "exit 3\n")); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v", err)
	}
}
