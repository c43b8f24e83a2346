package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/invite"
	"github.com/wgk3s/wgk3s/status"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultEnvFile is the unit's environment file, where the role is.
const DefaultEnvFile = "/etc/sysconfig/wgk3s"

// InvitedSuffix names the file beside the key that says the key came in a
// join code: the appliance replaces it at its first contact with the master.
const InvitedSuffix = ".invited"

// DefaultInviteTTL is how long a join code works.
const DefaultInviteTTL = 24 * time.Hour

// now is the clock invite and join read; tests move it.
var now = time.Now

// masterFile is the master's cluster file, read and checked to be the
// master's.
type masterFile struct {
	path string
	data []byte
	cfg  *configs.Config
	sock string
}

func readMasterFile(path, sock, command string) (*masterFile, error) {
	data, err := configs.ReadFile(path)
	if err != nil {
		return nil, usagef("%s: reading %s: %v; pass --config with the master's cluster file", command, path, err)
	}
	cfg, err := configs.LoadData(data, path, configs.Options{})
	if err != nil {
		return nil, err
	}
	if cfg.Self.Role != configs.RoleMaster {
		return nil, usagef("%s runs on the master: %s is %s's file (its key is in %s); run it where the master's key is", command, path, cfg.Self.Name, cfg.Cluster.Interface.PrivateKeyFile)
	}
	return &masterFile{path: path, data: data, cfg: cfg, sock: sock}, nil
}

// apply writes next in place of the file and has the running appliance
// reload it. A rejected reload puts the old file back: nothing is half
// applied. With no appliance running, the file is left for its start.
func (m *masterFile) apply(e *env, next []byte) (running bool, err error) {
	if _, err := configs.LoadData(next, m.path, configs.Options{Role: configs.RoleMaster}); err != nil {
		return false, err
	}
	_, ferr := status.Fetch(m.sock)
	if err := writeKeepingMode(m.path, next); err != nil {
		return false, err
	}
	if ferr != nil {
		fmt.Fprintf(e.stderr, "no running appliance answers on %s: %s is written and takes effect when wgk3s starts\n", m.sock, m.path)
		return false, nil
	}
	if err := status.Reload(m.sock); err != nil {
		if werr := writeKeepingMode(m.path, m.data); werr != nil {
			return true, fmt.Errorf("%w; and putting the old file back failed: %v", err, werr)
		}
		return true, fmt.Errorf("%w (%s is as it was)", err, m.path)
	}
	return true, nil
}

type inviteFlags struct {
	config, sock, endpoint, role, address, publicKey string
	ttl                                              time.Duration
	dryRun                                           bool
}

func runInvite(e *env, args []string) error {
	var f inviteFlags
	fs := flagSet(e, "invite", "NAME [--endpoint HOST:PORT] [--address IP] [--public-key KEY] [--ttl 24h] [--dry-run]")
	fs.StringVar(&f.config, "config", configs.DefaultPath, "the master's cluster file")
	fs.StringVar(&f.sock, "socket", status.DefaultSocket, "the running appliance's status socket")
	fs.StringVar(&f.endpoint, "endpoint", "", "how the other nodes reach the new one, PUBLIC-IP-OR-DNS:PORT; leave out for a node behind NAT")
	fs.StringVar(&f.role, "role", string(configs.RoleAgent), "the new node's role: agent, or server (a k3s server joining the master's etcd)")
	fs.StringVar(&f.address, "address", "", "its wg0 address (default: the next free one in network)")
	fs.StringVar(&f.publicKey, "public-key", "", "its public key, when its key was made on it (`appliance init`); the code then holds no secret")
	fs.DurationVar(&f.ttl, "ttl", DefaultInviteTTL, "how long the code works; the master removes the node if it has not made a handshake by then")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the change to the cluster file and make none")
	name, err := parseWithName(fs, args, "NAME, the new node's name, such as k3s-node-3")
	if err != nil {
		return err
	}
	if !configs.ValidNodeName(name) {
		return usagef("invite: %q is not a valid Kubernetes node name: use lower-case letters, digits, '-' and '.'", name)
	}
	switch configs.Role(f.role) {
	case configs.RoleAgent, configs.RoleServer:
	case configs.RoleMaster:
		return usagef("invite: --role master: a cluster has one master, this one; invite agents or servers")
	default:
		return usagef("invite: --role %q: use agent or server", f.role)
	}
	if f.ttl <= 0 {
		return usagef("invite: --ttl %s: give a positive duration such as 24h or 30m", f.ttl)
	}
	if f.endpoint != "" {
		if _, err := configs.ParseEndpoint(f.endpoint); err != nil {
			return usagef("invite: --endpoint: %v; write HOST:PORT such as 198.51.100.30:%d, or leave it out for a node behind NAT", err, configs.DefaultListenPort)
		}
	}
	m, err := readMasterFile(f.config, f.sock, "invite")
	if err != nil {
		return err
	}
	cl := m.cfg.Cluster
	if !cl.Sync {
		return usagef("invite: %s has sync: false, and a joining node fetches the master's file and its token over wg0; turn sync on, or add the node by hand (README \"Edit once\")", f.config)
	}
	addr, err := inviteAddress(cl, f.address)
	if err != nil {
		return err
	}
	var key *wgtypes.Key
	var pub wgtypes.Key
	if f.publicKey != "" {
		if pub, err = configs.ParsePublicKey(f.publicKey); err != nil {
			return usagef("invite: --public-key: %v; print the node's key on it with `appliance pubkey < /etc/wgk3s/private.key`", err)
		}
	} else {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return err
		}
		key, pub = &k, k.PublicKey()
	}
	next, err := configs.AddNode(m.data, configs.NewNode{Name: name, Role: f.role, Address: addr.String(), Endpoint: f.endpoint, PublicKey: pub.String()})
	if err != nil {
		return usagef("invite: %s: %v", f.config, err)
	}
	if f.dryRun {
		fmt.Fprintf(e.stdout, "would add to %s:\n%s", f.config, changed(m.data, next))
		return nil
	}
	expires := now().Add(f.ttl).Truncate(time.Second)
	stub, err := configs.Excerpt(next, cl.Master().Name, name)
	if err != nil {
		return err
	}
	code, err := invite.Code{Cluster: stub, Node: name, Key: key, Expires: expires}.Encode()
	if err != nil {
		return err
	}
	recPath := invite.Path(cl.Interface.PrivateKeyFile)
	recs, err := invite.Load(recPath)
	if err != nil {
		return err
	}
	if _, err := m.apply(e, next); err != nil {
		return err
	}
	rec := invite.Record{Node: name, PublicKey: pub.String(), Invited: now().UTC().Truncate(time.Second), Expires: expires.UTC(), Rotate: key != nil}
	if err := invite.Save(recPath, invite.Put(recs, rec)); err != nil {
		return fmt.Errorf("%s lists %s now, but recording the invite in %s failed (it will not expire): %w", f.config, name, recPath, err)
	}
	where := "no endpoint: behind NAT, reached where the master sees it"
	if f.endpoint != "" {
		where = "endpoint " + f.endpoint
	}
	fmt.Fprintf(e.stderr, "added %s (%s, %s, %s) to %s\n", name, f.role, addr, where, f.config)
	if key != nil {
		fmt.Fprintf(e.stderr, "the code holds a key for %s that works once: at its first contact the node replaces it with its own; until then hand the code over as you would a password (`appliance join -` reads it from stdin, out of the shell's history)\n", name)
	}
	fmt.Fprintf(e.stderr, "it works until %s; if %s has not joined by then (its first contact with the master), the master removes it from the file\n", expires.UTC().Format(time.RFC3339), name)
	fmt.Fprintf(e.stderr, "run this on the new node (the wgk3s package installed), then systemctl enable --now wgk3s:\n")
	fmt.Fprintf(e.stdout, "appliance join %s\n", code)
	return nil
}

// parseWithName parses flags around one positional argument.
func parseWithName(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", usageError{err}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", usagef("%s: give %s", fs.Name(), what)
	}
	name := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return "", usageError{err}
	}
	if len(fs.Args()) > 0 {
		return "", usagef("%s: unexpected argument %q", fs.Name(), fs.Args()[0])
	}
	return name, nil
}

// inviteAddress is the address asked for, checked, or the next free one:
// after the highest in use, else the lowest free.
func inviteAddress(cl *configs.Cluster, asked string) (netip.Addr, error) {
	used := map[netip.Addr]string{}
	var top netip.Addr
	for _, n := range cl.Nodes {
		used[n.Address] = n.Name
		if !top.IsValid() || top.Less(n.Address) {
			top = n.Address
		}
	}
	net := cl.Network
	usable := func(a netip.Addr) bool {
		_, taken := used[a]
		return net.Contains(a) && !taken && a != net.Masked().Addr() && net.Contains(a.Next())
	}
	if asked != "" {
		a, err := netip.ParseAddr(asked)
		if err != nil || !a.Is4() || !net.Contains(a) {
			return netip.Addr{}, usagef("invite: --address %q: give a free IPv4 address inside network %s", asked, net)
		}
		if name, taken := used[a]; taken {
			return netip.Addr{}, usagef("invite: --address %s is %s's; leave --address out for the next free one", a, name)
		}
		if !usable(a) {
			return netip.Addr{}, usagef("invite: --address %s is %s's network or broadcast address; pick another", a, net)
		}
		return a, nil
	}
	for a := top.Next(); net.Contains(a); a = a.Next() {
		if usable(a) {
			return a, nil
		}
	}
	for a := net.Masked().Addr().Next(); net.Contains(a); a = a.Next() {
		if usable(a) {
			return a, nil
		}
	}
	return netip.Addr{}, usagef("invite: network %s has no free address left; widen it or remove a node", net)
}

// changed renders the lines in which data and next differ: AddNode only
// inserts ("+" lines of next), RemoveNode only deletes ("-" lines of data),
// with their line numbers.
func changed(data, next []byte) string {
	a, b := strings.SplitAfter(string(data), "\n"), strings.SplitAfter(string(next), "\n")
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lines, sign := b, "+"
	if len(a) > len(b) {
		lines, sign = a, "-"
	}
	var s strings.Builder
	for j := i; j < i+len(lines)-min(len(a), len(b)) && j < len(lines); j++ {
		fmt.Fprintf(&s, "%4d %s %s", j+1, sign, lines[j])
	}
	return s.String()
}

// writeKeepingMode replaces path with data in one step, keeping its mode
// (0644 for a new file).
func writeKeepingMode(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	return atomicfile.Write(path, data, mode)
}

func runRemove(e *env, args []string) error {
	fs := flagSet(e, "remove", "NAME [--config FILE] [--dry-run]")
	config := fs.String("config", configs.DefaultPath, "the master's cluster file")
	sock := fs.String("socket", status.DefaultSocket, "the running appliance's status socket")
	dryRun := fs.Bool("dry-run", false, "print the change to the cluster file and make none")
	name, err := parseWithName(fs, args, "NAME, the node to remove")
	if err != nil {
		return err
	}
	m, err := readMasterFile(*config, *sock, "remove")
	if err != nil {
		return err
	}
	if name == m.cfg.Self.Name {
		return usagef("remove: %s is the master, this node; a cluster cannot drop its master", name)
	}
	next, err := configs.RemoveNode(m.data, name)
	if err != nil {
		return usagef("remove: %s: %v", *config, err)
	}
	if *dryRun {
		fmt.Fprintf(e.stdout, "would remove from %s:\n%s", *config, changed(m.data, next))
		return nil
	}
	running, err := m.apply(e, next)
	if err != nil {
		return err
	}
	recPath := invite.Path(m.cfg.Cluster.Interface.PrivateKeyFile)
	if recs, err := invite.Load(recPath); err == nil {
		if err := invite.Save(recPath, invite.Drop(recs, name)); err != nil {
			fmt.Fprintf(e.stderr, "could not update %s: %v\n", recPath, err)
		}
	}
	fmt.Fprintf(e.stderr, "removed %s from %s\n", name, *config)
	if running && m.cfg.Cluster.Sync {
		fmt.Fprintf(e.stderr, "the other nodes follow by the sync; %s is handed the file that drops it and stops using the mesh\n", name)
	}
	fmt.Fprintf(e.stderr, "its Kubernetes node stays until you delete it: k3s kubectl delete node %s\n", name)
	return nil
}

type joinFlags struct {
	config, envFile string
	force           bool
}

func runJoin(e *env, args []string) error {
	var f joinFlags
	fset := flagSet(e, "join", "[--config FILE] [--env-file FILE] [--force] CODE|-")
	fset.StringVar(&f.config, "config", configs.DefaultPath, "where to write the cluster file")
	fset.StringVar(&f.envFile, "env-file", DefaultEnvFile, "the unit's environment file, where the role goes")
	fset.BoolVar(&f.force, "force", false, "replace a different configuration already on this node")
	arg, err := parseWithName(fset, args, "the code `appliance invite` printed on the master, or - to read it from stdin")
	if err != nil {
		return err
	}
	text := arg
	if arg == "-" {
		line, err := bufio.NewReader(io.LimitReader(e.stdin, 128<<10)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		text = line
	}
	code, err := invite.Parse(text)
	if err != nil {
		return usagef("join: %v", err)
	}
	if err := code.Check(now()); err != nil {
		return usagef("join: %v", err)
	}
	cl, err := configs.Parse(code.Cluster, "the join code's cluster file")
	if err != nil {
		return fmt.Errorf("join: the code's cluster file does not validate (a code from another version?): %w", err)
	}
	self, ok := cl.NodeByName(code.Node)
	if !ok {
		return usagef("join: %v", invite.ErrMistyped)
	}
	keyFile := cl.Interface.PrivateKeyFile
	// The key: the code's, or the one made here for --public-key.
	createdKey := false
	existing, kerr := os.ReadFile(keyFile)
	switch {
	case code.Key != nil && errors.Is(kerr, fs.ErrNotExist):
		if err := writeSecret(keyFile, code.Key.String()+"\n"); err != nil {
			return err
		}
		createdKey = true
	case code.Key != nil && kerr == nil && strings.TrimSpace(string(existing)) == code.Key.String():
	case code.Key != nil && kerr == nil && !f.force:
		return usagef("join: %s holds another key; this node may be in a cluster already: move the key away, or pass --force to replace it (the old one kept as %s.previous)", keyFile, keyFile)
	case code.Key != nil && kerr == nil:
		if err := os.Rename(keyFile, keyFile+".previous"); err != nil {
			return err
		}
		if err := writeSecret(keyFile, code.Key.String()+"\n"); err != nil {
			return err
		}
	case code.Key != nil:
		return fmt.Errorf("join: reading %s: %w", keyFile, kerr)
	case kerr != nil:
		return usagef("join: the code was made with --public-key, so this node's key must be in %s already (`appliance init` makes it): %v", keyFile, kerr)
	}
	undo := func() {
		if createdKey {
			os.Remove(keyFile)
		}
	}
	// Checked as the appliance will load it: this node's key, its entry.
	if _, err := configs.LoadData(code.Cluster, f.config, configs.Options{Role: self.Role, Node: self.Name}); err != nil {
		undo()
		if code.Key == nil {
			return usagef("join: %s is not the key this code was made for (%s's public key is %s): run invite again with --public-key $(appliance pubkey < %s): %v", keyFile, self.Name, self.PublicKey, keyFile, err)
		}
		return err
	}
	if err := writeUnlessDifferent(f.config, code.Cluster, 0o644, f.force); err != nil {
		undo()
		return err
	}
	if err := writeRole(f.envFile, string(self.Role), f.force); err != nil {
		undo()
		return err
	}
	if code.Key != nil {
		// The appliance replaces the code's key with one made here at its
		// first contact with the master: the code then opens nothing.
		if err := atomicfile.Write(keyFile+InvitedSuffix, []byte(self.Name+"\n"), 0o600); err != nil {
			return err
		}
	}
	m := cl.Master()
	fmt.Fprintf(e.stderr, "joined as %s (%s, %s on %s); the master is %s at %s\n", self.Name, self.Role, self.Address, cl.Interface.Name, m.Name, m.Endpoint)
	fmt.Fprintf(e.stderr, "wrote %s, %s (ROLE=%s)", f.config, f.envFile, self.Role)
	if createdKey {
		fmt.Fprintf(e.stderr, " and %s (0600)", keyFile)
	}
	fmt.Fprintf(e.stderr, "; at its first start it fetches the master's file and the agent token over %s\n", cl.Interface.Name)
	fmt.Fprintf(e.stdout, "next: systemctl enable --now wgk3s\n")
	return nil
}

// writeUnlessDifferent writes data to path unless a different file is there
// (then only with force, the old one kept as path.previous).
func writeUnlessDifferent(path string, data []byte, mode os.FileMode, force bool) error {
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case bytes.Equal(old, data):
		return nil
	case !force:
		return usagef("join: %s holds another cluster file; this node may be in a cluster already: move it away, or pass --force to replace it (the old one kept as %s.previous)", path, path)
	default:
		if err := atomicfile.Write(path+".previous", old, mode); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
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
				return usagef("join: %s says ROLE=%s, and this node joins as %s: pass --force to change it", path, v, role)
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
