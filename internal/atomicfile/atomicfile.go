// Package atomicfile replaces a file as a whole: a reader sees the old
// contents or the new, never a part, and a crash leaves one of the two.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data through a temporary file beside it (the
// rename is atomic within a directory), created with mode from the start
// so that a secret is never readable by others, not even for a moment.
func Write(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename; cleans up a failure
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
