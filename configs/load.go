package configs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Options say how to find "this node" in the cluster file.
type Options struct {
	// Role, when set, must equal this node's role (the --role flag).
	Role Role
	// Node, when set, names this node's entry (the --node flag); otherwise
	// the entry whose public_key matches the private key file is this node.
	Node string
}

// Config is a cluster file as seen from one node: the whole cluster, which
// entry is this node, and this node's private key.
type Config struct {
	Cluster    *Cluster
	Self       Node
	PrivateKey PrivateKey
}

// Peers returns every node but this one.
func (c *Config) Peers() []Node { return c.Cluster.Peers(c.Self.Name) }

// PrivateKey holds a WireGuard private key and refuses to print it: every
// fmt verb shows a placeholder, so a stray log line cannot leak it.
type PrivateKey struct{ k wgtypes.Key }

// NewPrivateKey wraps k.
func NewPrivateKey(k wgtypes.Key) PrivateKey { return PrivateKey{k} }

// Key returns the key itself, for handing to WireGuard.
func (p PrivateKey) Key() wgtypes.Key { return p.k }

// PublicKey returns the matching public key.
func (p PrivateKey) PublicKey() wgtypes.Key { return p.k.PublicKey() }

// String never returns the key.
func (p PrivateKey) String() string { return "[private key]" }

// GoString never returns the key.
func (p PrivateKey) GoString() string { return p.String() }

// Load reads the cluster file at path, validates it, checks this node's
// secret files and works out which entry is this node. It changes nothing.
// Every problem found is returned together as Errors.
func Load(path string, opts Options) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, Errors{fileError(path, "", err, "pass --config with the path of the cluster file (default "+DefaultPath+")")}
	}
	cl, c := parse(data, path)
	if cl == nil {
		return nil, c.err()
	}
	cfg := &Config{Cluster: cl}
	if !c.has("interface.private_key_file") {
		if k, ok := readPrivateKey(cl.Interface.PrivateKeyFile, c); ok {
			cfg.PrivateKey = NewPrivateKey(k)
		}
	}
	if !c.has("nodes") {
		cfg.Self = identify(cl, cfg.PrivateKey, opts, c)
	}
	// A syncing agent fetches a missing token from the master over wg0.
	fetchable := cl.Sync && cfg.Self.Role == RoleAgent && tokenMissing(cl.K3s.TokenFile)
	if !c.has("k3s.token_file") && !fetchable {
		checkTokenFile(cl.K3s.TokenFile, c)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// has reports whether a problem was already found at path or below it.
func (c *collector) has(path string) bool {
	for _, e := range c.errs {
		if e.Field == path || strings.HasPrefix(e.Field, path+".") || strings.HasPrefix(e.Field, path+"[") {
			return true
		}
	}
	return false
}

func fileError(file, field string, err error, fix string) *FieldError {
	problem := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		problem = fmt.Sprintf("cannot %s %s: %v", pe.Op, pe.Path, pe.Err)
	}
	return &FieldError{File: file, Field: field, Problem: problem, Fix: fix}
}

// checkSecretFile verifies that a secret file exists, is a regular file and
// is readable by its owner only. It reports to c and returns false on failure.
func checkSecretFile(field, path, missingFix string, c *collector) bool {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.add(field, missingFix, "%s does not exist", path)
		return false
	case err != nil:
		c.add(field, "check the path and its directory's permissions", "cannot read %s: %v", path, errors.Unwrap(err))
		return false
	case !fi.Mode().IsRegular():
		c.add(field, "point it at a regular file", "%s is not a regular file", path)
		return false
	case fi.Mode().Perm()&0o077 != 0:
		c.add(field, "chmod 600 "+path, "%s is readable by group or others (mode %04o)", path, fi.Mode().Perm())
		return false
	}
	return true
}

func readPrivateKey(path string, c *collector) (wgtypes.Key, bool) {
	const field = "interface.private_key_file"
	if !checkSecretFile(field, path, "run `appliance init` on this node to create it", c) {
		return wgtypes.Key{}, false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		c.add(field, "check the file's permissions", "cannot read %s: %v", path, errors.Unwrap(err))
		return wgtypes.Key{}, false
	}
	// The contents are never echoed: a near-miss key is still a secret.
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		c.add(field, "write a key made by `appliance genkey` (or `wg genkey`) into it", "%s does not hold a WireGuard private key", path)
		return wgtypes.Key{}, false
	}
	return k, true
}

// tokenMissing reports whether the token file does not exist or is empty.
func tokenMissing(path string) bool {
	fi, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode().IsRegular() && fi.Size() == 0
}

func checkTokenFile(path string, c *collector) {
	const field = "k3s.token_file"
	fix := "on the master run `appliance init` to create it; on an agent copy it from the master (scp, then chmod 600 " + path + ")"
	if !checkSecretFile(field, path, fix, c) {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		c.add(field, "check the file's permissions", "cannot read %s: %v", path, errors.Unwrap(err))
		return
	}
	if strings.TrimSpace(string(data)) == "" {
		c.add(field, fix, "%s is empty", path)
	}
}

// identify finds this node's entry and checks it against the private key
// and the --role flag.
func identify(cl *Cluster, key PrivateKey, opts Options, c *collector) Node {
	var zero wgtypes.Key
	havekey := key.Key() != zero
	pub := key.PublicKey()
	var self Node
	if opts.Node != "" {
		n, ok := cl.NodeByName(opts.Node)
		if !ok {
			c.add("nodes", "pass --node with one of: "+strings.Join(nodeNames(cl), ", "), "--node %q names no node in the file", opts.Node)
			return Node{}
		}
		self = n
		if havekey && n.PublicKey != pub {
			c.add(nodePath(cl, n.Name)+".public_key", fmt.Sprintf("paste %s (the public key of %s) into this entry, or point interface.private_key_file at %s's key", pub, cl.Interface.PrivateKeyFile, n.Name),
				"does not match this node's private key")
		}
	} else {
		if !havekey {
			return Node{} // the key file's own error was reported
		}
		found := false
		for _, n := range cl.Nodes {
			if n.PublicKey == pub {
				self, found = n, true
			}
		}
		if !found {
			c.add("nodes", fmt.Sprintf("add this node with the entry `appliance init` prints (its public key is %s), or pass --node NAME", pub),
				"no entry has the public key of %s, so this node is not in the file", cl.Interface.PrivateKeyFile)
			return Node{}
		}
	}
	if opts.Role != "" && self.Role != opts.Role {
		c.add(nodePath(cl, self.Name)+".role", fmt.Sprintf("start with --role %s, or change the entry's role", self.Role),
			"--role %s, but this node (%s) is %s in the file", opts.Role, self.Name, self.Role)
	}
	return self
}

func nodePath(cl *Cluster, name string) string {
	for i, n := range cl.Nodes {
		if n.Name == name {
			return fmt.Sprintf("nodes[%d]", i)
		}
	}
	return "nodes"
}

func nodeNames(cl *Cluster) []string {
	names := make([]string, len(cl.Nodes))
	for i, n := range cl.Nodes {
		names[i] = n.Name
	}
	return names
}

// MaxFileSize bounds the cluster file: a 10,000-node file is about 2 MB.
const MaxFileSize = 16 << 20

// ReadFile reads a cluster file, refusing anything but a regular file of
// at most MaxFileSize: /dev/zero would exhaust memory, and a FIFO would
// block `appliance check`, or the signal loop of a running appliance on
// SIGHUP. The open does not block (O_NONBLOCK), so the type is known
// before a read can hang.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file", path, fileKind(fi.Mode()))
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s is %d bytes; a cluster file is at most %d MiB", path, fi.Size(), MaxFileSize>>20)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err == nil && len(data) > MaxFileSize {
		err = fmt.Errorf("%s grew past %d MiB while being read", path, MaxFileSize>>20)
	}
	return data, err
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}
