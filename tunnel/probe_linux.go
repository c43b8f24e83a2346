package tunnel

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Release returns the running kernel's release (uname -r).
func Release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return string(bytes.TrimRight(u.Release[:], "\x00")), nil
}

// ModuleAvailable reports, without loading anything, whether the running
// kernel has WireGuard: loaded (/sys/module/wireguard), built in, or present
// as a module in modules.dep. `appliance check` uses it; the run itself asks
// the kernel by creating the link.
func ModuleAvailable(root string) func() error {
	return func() error {
		if _, err := os.Stat(filepath.Join(root, "sys/module/wireguard")); err == nil {
			return nil
		}
		release, err := Release()
		if err != nil {
			return err
		}
		dir := filepath.Join(root, "lib/modules", release)
		for _, f := range []string{"modules.builtin", "modules.dep"} {
			data, err := os.ReadFile(filepath.Join(dir, f))
			if err == nil && bytes.Contains(data, []byte("/wireguard.ko")) {
				return nil
			}
		}
		return errors.New("has no WireGuard module (not loaded, not built in, not in modules.dep)")
	}
}
