package main

import (
	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// sdNotify tells systemd about the service's state (Type=notify). Outside
// systemd (no NOTIFY_SOCKET) it does nothing. The environment variable is
// kept: the appliance notifies more than once (READY, RELOADING, STOPPING);
// k3s never sees it (the supervisor strips it from the child's env).
func sdNotify(state string) {
	daemon.SdNotify(false, state)
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants with
// RELOADING=1 to order the reload against its own clock.
func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}
