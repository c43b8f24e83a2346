package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/status"
)

// fakeRunning is a running appliance on sock as the commands see it: it
// holds the status lock and answers on the socket, its status after
// statusDelay, a reload after reloadDelay.
type fakeRunning struct {
	config       string
	statusDelay  time.Duration
	reloads      atomic.Int32
	reloadResult error
}

func (f *fakeRunning) serve(t *testing.T, sock string) {
	t.Helper()
	l, err := status.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		status.Serve(ctx, l, func() status.Report {
			time.Sleep(f.statusDelay) // a report that takes long (the old appliance's, on a loaded host)
			return status.Report{Node: "k3s-master", Config: f.config}
		}, func() error { f.reloads.Add(1); return f.reloadResult })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestInviteWaitsForABusyAppliance: an appliance whose status takes longer
// than the 5 s the status command waits is busy, not absent (it holds its
// lock): invite asks it to reload and waits, instead of saying that no
// appliance runs and leaving the file unapplied.
func TestInviteWaitsForABusyAppliance(t *testing.T) {
	m := newTwoMachines(t, true)
	m.sock = filepath.Join(m.base, "status.sock")
	f := &fakeRunning{config: m.masterFile, statusDelay: 6 * time.Second}
	f.serve(t, m.sock)
	r := m.invite("home-1")
	codeOf(t, r)
	if strings.Contains(r.stderr, "no appliance runs") || f.reloads.Load() != 1 {
		t.Errorf("invite against a busy appliance: %d reload(s), %+v", f.reloads.Load(), r)
	}
}

// TestInviteRefusesAnotherFile: the running appliance names the file it
// runs; an invite into any other file would reach no node.
func TestInviteRefusesAnotherFile(t *testing.T) {
	m := newTwoMachines(t, true)
	m.sock = filepath.Join(m.base, "status.sock")
	other := filepath.Join(m.base, "elsewhere.yaml")
	f := &fakeRunning{config: other}
	f.serve(t, m.sock)
	before := mustRead(t, m.masterFile)
	r := m.invite("home-1")
	if r.code != exitUsage || !strings.Contains(r.stderr, "is not the file the running appliance runs ("+other+")") {
		t.Errorf("invite into another file: %+v", r)
	}
	if string(mustRead(t, m.masterFile)) != string(before) || f.reloads.Load() != 0 {
		t.Error("a refused invite changed the file or reloaded")
	}
}

// TestCleanupRefusesWhileAnApplianceRuns: an appliance holds its status
// lock even when it does not answer (stopped with SIGSTOP, busy): cleanup
// refuses, instead of taking its interface, rules and k3s away.
func TestCleanupRefusesWhileAnApplianceRuns(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "status.sock")
	f := &fakeRunning{statusDelay: 6 * time.Second}
	f.serve(t, sock)
	r := run(t, "", "cleanup", "--config", filepath.Join(dir, "none.yaml"), "--status-socket", sock)
	if os.Geteuid() != 0 {
		if r.code != exitFailure || !strings.Contains(r.stderr, "cleanup needs root") {
			t.Errorf("cleanup as non-root: %+v", r)
		}
		return
	}
	if r.code != exitFailure || !strings.Contains(r.stderr, "an appliance is running here (it holds "+sock+".lock") {
		t.Errorf("cleanup next to a running appliance: %+v", r)
	}
}
