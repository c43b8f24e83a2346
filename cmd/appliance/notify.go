package main

import "github.com/coreos/go-systemd/v22/daemon"

// sdNotify tells systemd about the service's state (Type=notify). Outside
// systemd (no NOTIFY_SOCKET) it does nothing. The environment variable is
// kept: the appliance notifies more than once (READY, RELOADING, STOPPING);
// k3s never sees it (the supervisor strips it from the child's env).
func sdNotify(state string) {
	daemon.SdNotify(false, state)
}
