package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// DefaultKeep is how many copies a node keeps.
const DefaultKeep = 3

// suffix names the sealed copies in a store's directory.
const suffix = ".snapshot"

// Store is the sealed copies a node keeps in one directory, named by the
// time they were taken; it keeps the newest Keep. A node cannot read them
// (unless it holds the server token); it checks only their header.
type Store struct {
	Dir  string
	Keep int
}

// Put keeps a sealed snapshot, written privately and atomically, and
// removes the copies beyond Keep, oldest first. kept is false when the
// copy is older than every one kept (or already kept).
func (s Store) Put(sealed []byte) (kept bool, err error) {
	info, err := Peek(sealed)
	if err != nil {
		return false, err
	}
	list, err := s.List()
	if err != nil {
		return false, err
	}
	keep := max(s.Keep, 1)
	for _, i := range list {
		if i.Taken.Equal(info.Taken) {
			return false, nil
		}
	}
	if len(list) >= keep && !info.Taken.After(list[len(list)-1].Taken) {
		return false, nil
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return false, err
	}
	if err := atomicfile.Write(s.path(info.Taken), sealed, 0o600); err != nil {
		return false, err
	}
	list = append(list, info)
	slices.SortFunc(list, func(a, b Info) int { return b.Taken.Compare(a.Taken) })
	for _, old := range list[min(keep, len(list)):] {
		if err := os.Remove(s.path(old.Taken)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return true, err
		}
	}
	return true, nil
}

// List returns the copies kept, newest first.
func (s Store) List() ([]Info, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Info
	for _, e := range entries {
		ns, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		n, err := strconv.ParseInt(ns, 10, 64)
		if err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		list = append(list, Info{Taken: time.Unix(0, n).UTC(), Size: int(fi.Size())})
	}
	slices.SortFunc(list, func(a, b Info) int { return b.Taken.Compare(a.Taken) })
	return list, nil
}

// Newest returns the newest copy kept; ok is false when there is none.
func (s Store) Newest() (sealed []byte, info Info, ok bool, err error) {
	list, err := s.List()
	if err != nil || len(list) == 0 {
		return nil, Info{}, false, err
	}
	sealed, err = os.ReadFile(s.path(list[0].Taken))
	if err != nil {
		return nil, Info{}, false, err
	}
	info, err = Peek(sealed)
	if err != nil {
		return nil, Info{}, false, fmt.Errorf("%s: %w", s.path(list[0].Taken), err)
	}
	return sealed, info, true, nil
}

func (s Store) path(taken time.Time) string {
	return filepath.Join(s.Dir, fmt.Sprintf("%020d%s", taken.UnixNano(), suffix))
}
