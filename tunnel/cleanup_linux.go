package tunnel

import (
	"errors"
	"fmt"
	"os"
)

// CleanUp removes what a run may have left for the interface name: the
// link and the userspace device's UAPI socket. It is what `appliance
// cleanup` (systemd's ExecStopPost) runs after a crash; nothing there is
// not an error. removed says whether a link was deleted.
func CleanUp(name string) (removed bool, err error) {
	h := netlinkHost{}
	exists, err := h.linkExists(name)
	if err != nil {
		return false, fmt.Errorf("looking for %s: %w", name, err)
	}
	if exists {
		if err := h.deleteLink(name); err != nil {
			return false, fmt.Errorf("removing %s: %w", name, err)
		}
	}
	if err := os.Remove(socketPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return exists, err
	}
	return exists, nil
}
