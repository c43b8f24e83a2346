package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
)

// CleanUp removes what a run may have left for the interface name: the
// link, if this appliance made it (a WireGuard or TUN link recorded in
// stateDir), and the userspace device's UAPI socket. It is what `appliance
// cleanup` (systemd's ExecStopPost) runs after a crash; nothing there is
// not an error. A link the appliance did not make is left alone, with its
// socket, and the error wraps ErrNotOurs. removed says whether a link was
// deleted.
func CleanUp(name, stateDir string) (removed bool, err error) {
	h := netlinkHost{}
	st, err := inspect(h, name, stateDir)
	if err != nil {
		return false, fmt.Errorf("looking for %s: %w", name, err)
	}
	if st.Exists && !st.Ours {
		return false, NotOursError(name, st)
	}
	// The socket first: a running appliance (cleanup --force) that makes
	// the link again after it is deleted makes a socket with it, which a
	// removal after the link's would take away.
	if err := os.Remove(socketPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if st.Exists {
		idx, _ := readRecord(stateDir, name)
		if err := h.deleteLink(name); err != nil {
			return false, fmt.Errorf("removing %s: %w", name, err)
		}
		// Only the record of the link removed here: a running appliance
		// that recreated the link meanwhile wrote the record of its new
		// one, which must stay (it is what lets it remove its link).
		if cur, ok := readRecord(stateDir, name); ok && cur == idx {
			removeRecord(stateDir, name)
		}
	} else if _, ok, _ := h.linkInfo(name); !ok {
		removeRecord(stateDir, name)
	}
	return st.Exists, nil
}

// CleanUpRoutes removes the fail-closed routes (blackholes with the
// appliance's metric) except those for keep: a crashed run's current
// networks stay, so that mesh and pod traffic cannot leave in the clear
// until the appliance runs again; an earlier file's go. It returns what it
// removed and what it kept.
func CleanUpRoutes(keep []netip.Prefix) (removed, kept []netip.Prefix, err error) {
	h := netlinkHost{}
	have, err := h.blackholes()
	if err != nil {
		return nil, nil, fmt.Errorf("listing the fail-closed routes: %w", err)
	}
	var errs []error
	for _, p := range have {
		if slices.Contains(keep, p) {
			kept = append(kept, p)
			continue
		}
		if err := h.deleteBlackhole(p); err != nil {
			errs = append(errs, fmt.Errorf("removing the fail-closed route for %s: %w", p, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, kept, errors.Join(errs...)
}
