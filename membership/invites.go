package membership

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

// InvitesFile is the master's record of invites not yet used, kept beside
// its private key (interface.private_key_file's directory, /etc/wgk3s).
const InvitesFile = "invites.json"

// Invite is one invite the master waits on: the node's entry stays in the
// cluster file until the invite is used, or until Expires, when the
// master removes it.
//
// An invite whose code carried the node's key (Rotate) is used in two
// steps: the node hands the master its own key (NewKey is set, the file
// names it), then that key makes a handshake (the record goes). An invite
// made with --public-key is used at the node's first handshake.
type Invite struct {
	Node      string    `json:"node"`
	PublicKey string    `json:"public_key"`
	Invited   time.Time `json:"invited"`
	Expires   time.Time `json:"expires"`
	// Rotate: the code carried the node's key, which the node replaces
	// with one of its own at its first contact (meshsync's /v1/key).
	Rotate bool `json:"rotate,omitempty"`
	// NewKey is the key the node replaced the code's with; the record
	// stays until that key made a handshake, so that a node whose answer
	// was lost can ask again.
	NewKey string `json:"new_key,omitempty"`
}

// InvitesPath is the record file for a cluster whose private key file is
// keyFile.
func InvitesPath(keyFile string) string { return filepath.Join(filepath.Dir(keyFile), InvitesFile) }

// loadInvites reads the records at path; a missing file is none.
func loadInvites(path string) ([]Invite, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []Invite
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("%s: %w; fix: remove it (its invites are then no longer removed when they expire)", path, err)
	}
	return rs, nil
}

// saveInvites writes the records to path (0600) in one step; none removes
// it.
func saveInvites(path string, rs []Invite) error {
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

// put adds r, replacing a record for the same node.
func put(rs []Invite, r Invite) []Invite {
	return append(drop(rs, r.Node), r)
}

// drop removes the record for node.
func drop(rs []Invite, node string) []Invite {
	return slices.DeleteFunc(slices.Clone(rs), func(r Invite) bool { return r.Node == node })
}

// find returns the record for node.
func find(rs []Invite, node string) (Invite, bool) {
	for _, r := range rs {
		if r.Node == node {
			return r, true
		}
	}
	return Invite{}, false
}
