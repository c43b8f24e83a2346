package membership

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/status"
)

// OpenMaster is the master's cluster file at path, edited by the invite
// and remove commands, and the running appliance's reload (the one whose
// status socket is sock). It refuses a file other than the one the
// running appliance runs: an edit there would reach no node.
func OpenMaster(path, sock string, now func() time.Time) (Master, error) {
	data, err := configs.ReadFile(path)
	if err != nil {
		return Master{}, &BadRequest{Flag: "--config", Problem: fmt.Sprintf("reading %s: %v", path, err), Fix: "pass --config with the master's cluster file"}
	}
	cl, err := configs.Parse(data, path)
	if err != nil {
		return Master{}, err
	}
	running, err := status.Running(sock)
	if err != nil {
		return Master{}, err
	}
	if running {
		if err := sameFileAsRunning(path, sock); err != nil {
			return Master{}, err
		}
	}
	return Master{Files: DiskFor(path, cl), Now: now, Reload: reloadRunning(sock)}, nil
}

// sameFileAsRunning refuses path unless it is the file the running
// appliance runs.
func sameFileAsRunning(path, sock string) error {
	r, err := status.FetchWithin(sock, 2*time.Second)
	if err != nil || r.Config == "" {
		return nil // an older appliance, or one too busy to say: the reload will tell
	}
	a, errA := os.Stat(path)
	b, errB := os.Stat(r.Config)
	if errA == nil && errB == nil && os.SameFile(a, b) {
		return nil
	}
	abs, _ := filepath.Abs(path)
	return &BadRequest{Flag: "--config", Problem: fmt.Sprintf("%s is not the file the running appliance runs (%s): an edit there would reach no node", abs, r.Config),
		Fix: "pass --config " + r.Config}
}

// reloadRunning has the running appliance reload: ErrNoAppliance when none
// holds the status lock; a busy one is waited for (the reload is queued
// behind what it does).
func reloadRunning(sock string) func() error {
	return func() error {
		running, err := status.Running(sock)
		if err != nil {
			return err
		}
		if !running {
			return ErrNoAppliance
		}
		return status.Reload(sock)
	}
}
