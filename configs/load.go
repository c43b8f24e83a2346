package configs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"syscall"
	"unicode"

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
		return nil, Errors{fileError(path, "", err, readFix(err))}
	}
	return LoadData(data, path, opts)
}

// readFix is the fix for a cluster file that cannot be read: a wrong path
// is fixed with --config, a wrong kind of file by replacing it.
func readFix(err error) string {
	var kind *notRegularError
	switch {
	case errors.As(err, &kind):
		return "the cluster file must be a regular file of at most 16 MiB; point --config at one (default " + DefaultPath + ")"
	case errors.Is(err, fs.ErrNotExist):
		return "pass --config with the path of the cluster file (default " + DefaultPath + ")"
	case errors.Is(err, fs.ErrPermission):
		return "run as root, or make the file readable by this user"
	}
	return "check the path given to --config (default " + DefaultPath + ")"
}

// LoadData is Load for a cluster file's bytes; name is what messages call
// the file (its path, or where it came from).
func LoadData(data []byte, name string, opts Options) (*Config, error) {
	cl, c := parse(data, name)
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
	if cfg.Self.Name != "" {
		checkTokens(cfg, c)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkTokens checks the token files this node's k3s reads. The master
// reads the server token (k3s.token_file) and the agent token, which it
// creates when missing; an agent reads the agent token only, which a
// syncing agent fetches from the master when missing.
func checkTokens(cfg *Config, c *collector) {
	k := cfg.Cluster.K3s
	if cfg.Self.Role == RoleMaster {
		if !c.has("k3s.token_file") {
			checkTokenFile("k3s.token_file", k.TokenFile,
				"run `appliance init --role master` on this node to create it, or write the cluster's server token into it (chmod 600 "+k.TokenFile+")", c)
		}
		if !c.has("k3s.agent_token_file") && !TokenMissing(k.AgentTokenFile) {
			checkTokenFile("k3s.agent_token_file", k.AgentTokenFile, "remove it: the master creates a new one when it starts", c)
		}
		return
	}
	if cfg.Self.Role == RoleServer {
		// A server reads the server token, fetched from the master over wg0
		// when missing (sync on).
		if c.has("k3s.token_file") || cfg.Cluster.Sync && TokenMissing(k.TokenFile) {
			return
		}
		checkTokenFile("k3s.token_file", k.TokenFile,
			"copy the master's "+k.TokenFile+" here and chmod 600 it, or turn sync on so that it is fetched over wg0", c)
		return
	}
	if c.has("k3s.agent_token_file") || cfg.Cluster.Sync && TokenMissing(k.AgentTokenFile) {
		return
	}
	checkTokenFile("k3s.agent_token_file", k.AgentTokenFile,
		"copy the master's "+k.AgentTokenFile+" here (the master creates it when it starts) and chmod 600 it, or turn sync on so that it is fetched over wg0", c)
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

// TokenMissing reports whether the token file does not exist or is empty.
func TokenMissing(path string) bool {
	fi, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode().IsRegular() && fi.Size() == 0
}

// MaxTokenSize bounds a token file: k3s's tokens are one short line.
const MaxTokenSize = 4096

func checkTokenFile(field, path, fix string, c *collector) {
	if !checkSecretFile(field, path, fix, c) {
		return
	}
	tok, err := ReadToken(path)
	if err != nil {
		c.add(field, fix, "%v", err)
		return
	}
	if problem := TokenProblem(tok); problem != "" {
		// The token itself is never quoted: a near-miss is still a secret.
		c.add(field, "write a bare password (`appliance init` writes one) or the full token k3s prints (K10<64 hex digits>::server:<password>)",
			"%s: k3s would refuse the token in it: %v", path, errors.New(problem))
	}
}

// ReadToken reads a token file: one line of at most MaxTokenSize bytes,
// without the surrounding white space.
func ReadToken(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %v", path, errors.Unwrap(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxTokenSize+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("cannot read %s: %v", path, err)
	case len(data) > MaxTokenSize:
		return "", fmt.Errorf("%s is longer than a k3s token (at most %d bytes)", path, MaxTokenSize)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}

// TokenProblem says why k3s would refuse tok, or returns "". k3s reads a
// token that starts with K10 as K10<CA hash>::<user>:<password> (the CA
// hash is 64 hex digits, the SHA-256 of the cluster CA, or empty) or as
// K10<CA hash>::<bootstrap token>; any other token is a bare password
// (pkg/clientaccess/token.go, parseToken).
func TokenProblem(tok string) string {
	if tok == "" {
		return "it is empty"
	}
	if strings.IndexFunc(tok, unicode.IsSpace) >= 0 {
		return "it contains white space"
	}
	rest, ok := strings.CutPrefix(tok, "K10")
	if !ok {
		return ""
	}
	hash, creds, ok := strings.Cut(rest, "::")
	switch {
	case !ok:
		return "it starts with K10 but has no \"::\" after the CA hash (a token that starts with K10 is read as K10<CA hash>::<user>:<password>)"
	case hash != "" && (len(hash) != 64 || strings.Trim(strings.ToLower(hash), "0123456789abcdef") != ""):
		return fmt.Sprintf("its CA hash (between K10 and \"::\") is %d characters; it must be 64 hex digits", len(hash))
	case bootstrapToken.MatchString(creds):
		return ""
	}
	if user, pass, ok := strings.Cut(creds, ":"); !ok || pass == "" || user == "" {
		return "after \"::\" it needs <user>:<password>, such as server:<password>"
	}
	return ""
}

// bootstrapToken is a kubeadm bootstrap token, which k3s also takes.
var bootstrapToken = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

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
		return nil, &notRegularError{fmt.Sprintf("%s is %s, not a regular file", path, fileKind(fi.Mode()))}
	}
	if fi.Size() > MaxFileSize {
		return nil, &notRegularError{fmt.Sprintf("%s is %d bytes; a cluster file is at most %d MiB", path, fi.Size(), MaxFileSize>>20)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err == nil && len(data) > MaxFileSize {
		err = fmt.Errorf("%s grew past %d MiB while being read", path, MaxFileSize>>20)
	}
	return data, err
}

// notRegularError is a path that is not a cluster file at all: not a
// regular file, or too big.
type notRegularError struct{ msg string }

func (e *notRegularError) Error() string { return e.msg }

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
