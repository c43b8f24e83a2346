package membership

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// InvitedSuffix names the file beside the key that says the key came in a
// join code: the appliance replaces it at its first contact with the
// master (Switch), and keeps the key it makes in NextSuffix meanwhile.
const (
	InvitedSuffix = ".invited"
	NextSuffix    = ".next"
)

// JoinRequest is what `appliance join` is given.
type JoinRequest struct {
	Code Code
	// Config is where the cluster file goes; EnvFile the unit's
	// environment file, where the role goes.
	Config, EnvFile string
	// Force replaces a different key, file or role (kept as .previous).
	Force bool
	Now   time.Time
}

// Joined is what a join wrote.
type Joined struct {
	Self, Master configs.Node
	Interface    string
	// KeyFile is set when the key was written (the code carried it).
	KeyFile string
}

// Join writes what the new node needs: its key (0600, unless the code was
// made with --public-key, when the key must be here already), the code's
// cluster file and ROLE= in the environment file, after checking the
// result loads as the appliance will load it. A different key, file or
// role already there is refused unless Force; the same code twice changes
// nothing. Nothing is left half written: a failure removes the key it
// created.
func Join(r JoinRequest) (Joined, error) {
	c := r.Code
	if err := c.Check(r.Now); err != nil {
		return Joined{}, &BadRequest{Flag: "CODE", Problem: err.Error(), Fix: "ask for a new one"}
	}
	cl, err := configs.Parse(c.Cluster, "the join code's cluster file")
	if err != nil {
		return Joined{}, fmt.Errorf("the code's cluster file does not validate (a code from another version?): %w", err)
	}
	self, ok := cl.NodeByName(c.Node)
	if !ok {
		return Joined{}, ErrMistyped
	}
	keyFile := cl.Interface.PrivateKeyFile
	created, err := placeKey(c, keyFile, r.Force)
	if err != nil {
		return Joined{}, err
	}
	undo := func() {
		if created {
			os.Remove(keyFile)
		}
	}
	if _, err := configs.LoadData(c.Cluster, r.Config, configs.Options{Role: self.Role, Node: self.Name}); err != nil {
		undo()
		if c.Key == nil {
			return Joined{}, &BadRequest{Flag: "CODE", Problem: fmt.Sprintf("%s is not the key this code was made for (%s's public key is %s): %v", keyFile, self.Name, self.PublicKey, err),
				Fix: fmt.Sprintf("run invite again with --public-key $(appliance pubkey < %s)", keyFile)}
		}
		return Joined{}, err
	}
	if err := writeUnlessDifferent(r.Config, c.Cluster, r.Force); err != nil {
		undo()
		return Joined{}, err
	}
	if err := writeRole(r.EnvFile, string(self.Role), r.Force); err != nil {
		undo()
		return Joined{}, err
	}
	if c.Key != nil {
		marker := self.Name + " " + c.Expires.UTC().Format(time.RFC3339) + "\n"
		if err := atomicfile.Secret(keyFile+InvitedSuffix, []byte(marker)); err != nil {
			return Joined{}, err
		}
	}
	j := Joined{Self: self, Master: cl.Master(), Interface: cl.Interface.Name}
	if created {
		j.KeyFile = keyFile
	}
	return j, nil
}

// placeKey writes the code's key to keyFile, or checks that the key made
// here for a --public-key code is there. It says whether it created the
// file.
func placeKey(c Code, keyFile string, force bool) (bool, error) {
	existing, err := os.ReadFile(keyFile)
	switch {
	case c.Key == nil && err != nil:
		return false, &BadRequest{Flag: "CODE", Problem: fmt.Sprintf("the code was made with --public-key, so this node's key must be in %s already: %v", keyFile, err),
			Fix: "make it with `appliance init` (or `appliance genkey --out " + keyFile + "`) and invite with its public key"}
	case c.Key == nil:
		return false, nil
	case errors.Is(err, fs.ErrNotExist):
		return true, atomicfile.CreateSecret(keyFile, []byte(c.Key.String()+"\n"))
	case err != nil:
		return false, fmt.Errorf("reading %s: %w", keyFile, err)
	case strings.TrimSpace(string(existing)) == c.Key.String():
		return false, nil
	case !force:
		return false, &BadRequest{Flag: "--force", Problem: keyFile + " holds another key; this node may be in a cluster already",
			Fix: "move the key away, or pass --force to replace it (the old one kept as " + keyFile + ".previous)"}
	}
	if err := os.Rename(keyFile, keyFile+".previous"); err != nil {
		return false, err
	}
	return false, atomicfile.Secret(keyFile, []byte(c.Key.String()+"\n"))
}

// writeUnlessDifferent writes data to path unless a different file is
// there (then only with force, the old one kept as path.previous).
func writeUnlessDifferent(path string, data []byte, force bool) error {
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case bytes.Equal(old, data):
		return nil
	case !force:
		return &BadRequest{Flag: "--force", Problem: path + " holds another cluster file; this node may be in a cluster already",
			Fix: "move it away, or pass --force to replace it (the old one kept as " + path + ".previous)"}
	default:
		if err := atomicfile.Replace(path+".previous", old); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o644)
}

// writeRole sets ROLE= in the unit's environment file, keeping its other
// lines; a different role there is replaced only with force.
func writeRole(path, role string, force bool) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var out []string
	found := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ROLE="); ok {
			if v != role && !force {
				return &BadRequest{Flag: "--force", Problem: fmt.Sprintf("%s says ROLE=%s, and this node joins as %s", path, v, role), Fix: "pass --force to change it"}
			}
			line, found = "ROLE="+role+"\n", true
		}
		if line != "" {
			out = append(out, line)
		}
	}
	if !found {
		if len(out) == 0 {
			out = append(out, "# written by appliance join: this node's role in the cluster file\n")
		} else if !strings.HasSuffix(out[len(out)-1], "\n") {
			out[len(out)-1] += "\n"
		}
		out = append(out, "ROLE="+role+"\n")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, []byte(strings.Join(out, "")), 0o644)
}
