package firewall

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// sysctlFS reads and writes sysctls; the real one is /proc/sys.
type sysctlFS interface {
	Get(key string) (string, error)
	Set(key, value string) error
}

type procSys struct{ root string }

func (p procSys) path(key string) string {
	return filepath.Join(p.root, strings.ReplaceAll(key, ".", "/"))
}

func (p procSys) Get(key string) (string, error) {
	b, err := os.ReadFile(p.path(key))
	return strings.TrimSpace(string(b)), err
}

func (p procSys) Set(key, value string) error {
	return os.WriteFile(p.path(key), []byte(value+"\n"), 0o644)
}

// sysctlKeeper sets sysctls and restores their values from before the
// first change. Those values are saved in a state file under /run, so that
// a run killed before it could restore them still restores the originals
// on its next clean stop (or `appliance cleanup`); /run is emptied at boot,
// when the kernel's defaults come back anyway.
type sysctlKeeper struct {
	fs    sysctlFS
	state string // the state file
}

func (k *sysctlKeeper) load() (map[string]string, error) {
	saved := map[string]string{}
	b, err := os.ReadFile(k.state)
	if errors.Is(err, fs.ErrNotExist) {
		return saved, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("reading %s: %w; fix: remove it (the sysctls it saved are then left as they are)", k.state, err)
	}
	return saved, nil
}

func (k *sysctlKeeper) set(want []Sysctl) error {
	var saved map[string]string // read only when something must change
	for _, s := range want {
		cur, err := k.fs.Get(s.Key)
		if err != nil {
			return fmt.Errorf("reading sysctl %s: %w", s.Key, err)
		}
		if cur == s.Value {
			continue
		}
		if saved == nil {
			if saved, err = k.load(); err != nil {
				return err
			}
		}
		// Save the original before changing it, and only the first time:
		// a later run must not mistake our own value for the original.
		if _, ok := saved[s.Key]; !ok {
			saved[s.Key] = cur
			if err := k.save(saved); err != nil {
				return fmt.Errorf("saving sysctl %s before changing it: %w", s.Key, err)
			}
		}
		if err := k.fs.Set(s.Key, s.Value); err != nil {
			return fmt.Errorf("setting sysctl %s=%s: %w", s.Key, s.Value, err)
		}
	}
	return nil
}

func (k *sysctlKeeper) save(saved map[string]string) error {
	b, _ := json.Marshal(saved)
	if err := os.MkdirAll(filepath.Dir(k.state), 0o700); err != nil {
		return err
	}
	tmp := k.state + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, k.state)
}

// restore puts back every saved value and forgets them.
func (k *sysctlKeeper) restore() error {
	saved, err := k.load()
	if err != nil {
		return err
	}
	var errs []error
	for key, v := range saved {
		if err := k.fs.Set(key, v); err != nil {
			errs = append(errs, fmt.Errorf("restoring sysctl %s=%s: %w", key, v, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.Remove(k.state); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
