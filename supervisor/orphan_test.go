package supervisor

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// startSleeper runs a process that is not the supervisor's child as far as
// StopOrphan knows, and reaps it when it ends.
func startSleeper(t *testing.T, script string) (pid int, exited chan struct{}) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The script says ready once its traps are set.
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	exited = make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	return cmd.Process.Pid, exited
}

func TestStopOrphanStopsTheRecordedProcess(t *testing.T) {
	state := filepath.Join(t.TempDir(), "k3s.json")
	pid, exited := startSleeper(t, "echo ready; while :; do sleep 1; done")
	if err := writeRecord(state, pid); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record: %v, %v", fi, err)
	}
	stopped, err := StopOrphan(state, 5*time.Second, slog.New(slog.DiscardHandler))
	if err != nil || !stopped {
		t.Fatalf("StopOrphan = %v, %v", stopped, err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the recorded process still runs")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the record is still there: %v", err)
	}
}

func TestStopOrphanKillsAfterTheGrace(t *testing.T) {
	state := filepath.Join(t.TempDir(), "k3s.json")
	pid, exited := startSleeper(t, "trap '' TERM; echo ready; while :; do sleep 1; done")
	if err := writeRecord(state, pid); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	stopped, err := StopOrphan(state, 300*time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil || !stopped {
		t.Fatalf("StopOrphan = %v, %v", stopped, err)
	}
	<-exited
	if took := time.Since(began); took < 300*time.Millisecond {
		t.Errorf("killed after %v, before the grace period", took)
	}
}

func TestStopOrphanLeavesAnotherProcessAlone(t *testing.T) {
	state := filepath.Join(t.TempDir(), "k3s.json")
	pid, exited := startSleeper(t, "echo ready; while :; do sleep 1; done")
	ticks, err := startTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := exePath(pid)
	for name, rec := range map[string]childRecord{
		"pid reused (other start time)": {PID: pid, StartTicks: ticks + 1, Exe: exe},
		"pid reused (other binary)":     {PID: pid, StartTicks: ticks, Exe: "/usr/local/bin/k3s"},
	} {
		data, _ := json.Marshal(rec)
		os.WriteFile(state, data, 0o600)
		stopped, err := StopOrphan(state, time.Second, slog.New(slog.DiscardHandler))
		if stopped || err != nil {
			t.Errorf("%s: StopOrphan = %v, %v; want nothing stopped", name, stopped, err)
		}
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("%s: the unrelated process was signalled", name)
		}
	}
	select {
	case <-exited:
		t.Fatal("the unrelated process exited")
	default:
	}
	if stopped, err := StopOrphan(state, time.Second, slog.New(slog.DiscardHandler)); stopped || err != nil {
		t.Errorf("without a record: %v, %v", stopped, err)
	}
}
