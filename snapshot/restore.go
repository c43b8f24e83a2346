package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// Target is where a restored snapshot's files go on the new machine.
type Target struct {
	// Datastore is k3s's state.db path (DATA-DIR/server/db/state.db).
	Datastore string
	// AgentToken and NodePassword are where the master's agent token
	// and its own node password are read from.
	AgentToken, NodePassword string
}

// ErrDatastoreExists: restore does not write over a datastore.
var ErrDatastoreExists = errors.New("a datastore is already there")

// Restore writes the files of an opened bundle in place, privately. It
// refuses to replace a datastore: restore is for a new machine, or one
// whose k3s data the operator moved away.
func Restore(files map[string][]byte, t Target) error {
	if _, err := os.Stat(t.Datastore); err == nil {
		return fmt.Errorf("%s: %w (restore brings a lost master back on a new machine; move k3s's data directory away first if this one is to be replaced)", t.Datastore, ErrDatastoreExists)
	}
	for _, f := range []struct{ name, path string }{
		{FileAgentToken, t.AgentToken},
		{FileNodePassword, t.NodePassword},
		{FileDatastore, t.Datastore}, // last: k3s starts from it
	} {
		data, ok := files[f.name]
		if !ok || f.path == "" {
			continue
		}
		if err := writePrivate(f.path, data); err != nil {
			return fmt.Errorf("restoring %s: %w", f.path, err)
		}
	}
	return nil
}

// writePrivate writes data to path (0600, directories 0700), whole or
// not at all (atomicfile).
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
