package invite

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// FileName is the master's record of invites not yet used, kept beside its
// private key (interface.private_key_file's directory, /etc/wgk3s).
const FileName = "invites.json"

// Record is one invite the master waits on: the node's entry stays in the
// cluster file until its first handshake, or until Expires, when the
// master removes it.
type Record struct {
	Node      string    `json:"node"`
	PublicKey string    `json:"public_key"`
	Invited   time.Time `json:"invited"`
	Expires   time.Time `json:"expires"`
	// Rotate: the code carried the node's key, which the node replaces
	// with one of its own at its first contact (meshsync's /v1/key); the
	// invite is used then. Otherwise it is used at the first handshake.
	Rotate bool `json:"rotate,omitempty"`
}

// Path is the record file for a cluster whose private key file is keyFile.
func Path(keyFile string) string { return filepath.Join(filepath.Dir(keyFile), FileName) }

// Load reads the records at path; a missing file is none.
func Load(path string) ([]Record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []Record
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("%s: %w; fix: remove it (its invites are then no longer removed when they expire)", path, err)
	}
	return rs, nil
}

// Save writes the records to path (0600) in one step; none removes it.
func Save(path string, rs []Record) error {
	if len(rs) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	data, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o600)
}

// Put adds r, replacing a record for the same node.
func Put(rs []Record, r Record) []Record {
	rs = Drop(rs, r.Node)
	return append(rs, r)
}

// Drop removes the record for node.
func Drop(rs []Record, node string) []Record {
	return slices.DeleteFunc(slices.Clone(rs), func(r Record) bool { return r.Node == node })
}

// Expired returns the records whose time is up at now.
func Expired(rs []Record, now time.Time) []Record {
	var out []Record
	for _, r := range rs {
		if !now.Before(r.Expires) {
			out = append(out, r)
		}
	}
	return out
}
