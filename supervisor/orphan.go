package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
)

// DefaultStateFile is where the running k3s child is recorded.
const DefaultStateFile = "/run/wgk3s/k3s.json"

// childRecord identifies the k3s child across an appliance crash: a pid
// alone could be reused by another process by the time it is read back.
type childRecord struct {
	PID int `json:"pid"`
	// StartTicks is field 22 of /proc/PID/stat: when the process started,
	// in clock ticks since boot.
	StartTicks uint64 `json:"start_ticks"`
	Exe        string `json:"exe"`
}

// writeRecord records the child in path (0600, atomically).
func writeRecord(path string, pid int) error {
	ticks, err := startTicks(pid)
	if err != nil {
		return err
	}
	exe, err := exePath(pid)
	if err != nil {
		return err
	}
	data, err := json.Marshal(childRecord{PID: pid, StartTicks: ticks, Exe: exe})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// StopOrphan stops a k3s that a killed appliance left running, recorded in
// stateFile, with the same SIGTERM, grace, SIGKILL as a normal stop.
//
// The parent-death signal alone does not cover this: the kernel clears it
// whenever the child's security context changes at exec, as when
// k3s-selinux makes /usr/local/bin/k3s run as container_runtime_t, or a
// setgid binary changes the effective group. The recorded process is
// stopped only if it is still the same one: same pid, start time and
// executable. It reports whether it stopped one.
func StopOrphan(stateFile string, grace time.Duration, log *slog.Logger) (bool, error) {
	data, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer os.Remove(stateFile)
	var rec childRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID <= 0 {
		log.Warn("ignoring an unreadable k3s record", "file", stateFile)
		return false, nil
	}
	if !rec.alive() {
		return false, nil
	}
	log.Warn("stopping a k3s left running by an earlier appliance run", "pid", rec.PID, "exe", rec.Exe, "grace", grace)
	if err := syscall.Kill(rec.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("stopping the earlier k3s (pid %d): %w", rec.PID, err)
	}
	if poll.Until(grace, func() bool { return !rec.alive() }) {
		return true, nil
	}
	log.Warn("the earlier k3s did not stop within the grace period; killing it", "pid", rec.PID)
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("killing the earlier k3s (pid %d): %w", rec.PID, err)
	}
	if !poll.Until(10*time.Second, func() bool { return !rec.alive() }) {
		return false, fmt.Errorf("the earlier k3s (pid %d) is still running after SIGKILL", rec.PID)
	}
	return true, nil
}

// alive reports whether the recorded process still runs (a zombie does not).
func (r childRecord) alive() bool {
	ticks, err := startTicks(r.PID)
	if err != nil || ticks != r.StartTicks {
		return false
	}
	exe, err := exePath(r.PID)
	return err == nil && exe == r.Exe
}

// startTicks reads a live process's start time from /proc/PID/stat; a
// zombie counts as gone.
func startTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 overall
}

// exePath is the process's executable; a binary replaced by an upgrade
// keeps its path with " (deleted)" appended, which is dropped.
func exePath(pid int) (string, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return strings.TrimSuffix(exe, " (deleted)"), err
}
