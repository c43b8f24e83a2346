//go:build !linux

package supervisor

import "syscall"

// childAttr: only Linux has a parent-death signal; the appliance runs k3s
// on Linux alone, and elsewhere this package is built for its unit tests
// and `appliance check`.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

// Leftovers says what StopPods removed.
type Leftovers struct {
	Processes int
	Mounts    int
	Links     []string
}

// StopPods has nothing to stop off Linux.
func StopPods() (Leftovers, error) { return Leftovers{}, nil }
