package membership

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultTTL is how long a join code works.
const DefaultTTL = 24 * time.Hour

// ErrNoAppliance is what a Master's Reload returns when no appliance runs
// on the master: the file waits for its start.
var ErrNoAppliance = errors.New("no appliance runs here")

// BadRequest is an invite or remove the operator must change: the flag,
// what is wrong with it and the fix.
type BadRequest struct{ Flag, Problem, Fix string }

func (e *BadRequest) Error() string {
	if e.Flag == "" {
		return e.Problem + "; " + e.Fix
	}
	return e.Flag + ": " + e.Problem + "; " + e.Fix
}

func badRequest(flag, fix, format string, a ...any) error {
	return &BadRequest{Flag: flag, Problem: fmt.Sprintf(format, a...), Fix: fix}
}

// Master edits the master's cluster file: invite and remove (the commands)
// and, in the running appliance, key changes and expiry (keychange.go,
// expiry.go).
type Master struct {
	Files Files
	// Reload has the running appliance apply the file as it is now; it
	// returns ErrNoAppliance when none runs, and why it refused the file
	// otherwise.
	Reload func() error
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (m Master) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// InviteRequest is what `appliance invite` asks for.
type InviteRequest struct {
	Name string
	Role configs.Role // agent (default) or server
	// Endpoint is how the others reach the node; empty for a node
	// behind NAT.
	Endpoint string
	// Address is its wg address; empty for the next free one.
	Address string
	// PublicKey is the node's key made on it; nil makes one for the code.
	PublicKey *wgtypes.Key
	TTL       time.Duration // default DefaultTTL
}

// SetPublicKey takes --public-key: the key made on the node, which it
// prints with `appliance pubkey`.
func (r *InviteRequest) SetPublicKey(v string) error {
	k, err := configs.ParsePublicKey(v)
	if r.PublicKey = &k; err != nil {
		return fmt.Errorf("%w; print the node's key on it with `appliance pubkey < /etc/wgk3s/private.key`", err)
	}
	return nil
}

// Invited is an invite made.
type Invited struct {
	Node    configs.NewNode
	Code    string
	Expires time.Time
	// KeyInCode: the code holds the node's private key.
	KeyInCode bool
	// Running: the running appliance took the file; else none runs and
	// the file waits for its start.
	Running bool
	// Lines are the lines added to the file, with their numbers.
	Lines string
}

func (r *InviteRequest) check() error {
	if !configs.ValidNodeName(r.Name) {
		return badRequest("NAME", "use lower-case letters, digits, '-' and '.'", "%q is not a valid Kubernetes node name", r.Name)
	}
	switch r.Role {
	case "":
		r.Role = configs.RoleAgent
	case configs.RoleAgent, configs.RoleServer:
	case configs.RoleMaster:
		return badRequest("--role", "invite agents or servers", "master: a cluster has one master, this one")
	default:
		return badRequest("--role", "use agent or server", "%q is not a role", r.Role)
	}
	if r.TTL == 0 {
		r.TTL = DefaultTTL
	}
	if r.TTL < 0 {
		return badRequest("--ttl", "give a positive duration such as 24h or 30m", "%s is negative", r.TTL)
	}
	if r.Endpoint != "" {
		if _, err := configs.ParseEndpoint(r.Endpoint); err != nil {
			return badRequest("--endpoint", fmt.Sprintf("write HOST:PORT such as 198.51.100.30:%d or [2001:db8::7]:%d, or leave it out for a node behind NAT", configs.DefaultListenPort, configs.DefaultListenPort), "%v", err)
		}
	}
	return nil
}

// masterCluster parses data and checks it is a master's file with sync.
func masterCluster(data []byte, path string) (*configs.Config, error) {
	cfg, err := configs.LoadData(data, path, configs.Options{})
	if err != nil {
		return nil, err
	}
	if cfg.Self.Role != configs.RoleMaster {
		return nil, badRequest("--config", "run it where the master's key is", "%s is %s's file (its key is in %s); invite and remove run on the master", path, cfg.Self.Name, cfg.Cluster.Interface.PrivateKeyFile)
	}
	return cfg, nil
}

// added is the node an invite adds to data, and the file with it.
func (r InviteRequest) added(data []byte, path string) (configs.NewNode, []byte, *configs.Config, error) {
	cfg, err := masterCluster(data, path)
	if err != nil {
		return configs.NewNode{}, nil, nil, err
	}
	if !cfg.Cluster.Sync {
		return configs.NewNode{}, nil, nil, badRequest("", "turn sync on, or add the node by hand (README \"Edit once\")", "%s has sync: false, and a joining node fetches the master's file and its token over wg0", path)
	}
	addr, err := freeAddress(cfg.Cluster, r.Address)
	if err != nil {
		return configs.NewNode{}, nil, nil, err
	}
	n := configs.NewNode{Name: r.Name, Role: string(r.Role), Address: addr.String(), Endpoint: r.Endpoint, PublicKey: r.PublicKey.String()}
	next, err := configs.AddNode(data, n)
	if err != nil {
		return configs.NewNode{}, nil, nil, badRequest("NAME", "pick another name", "%v", err)
	}
	return n, next, cfg, nil
}

// PlanInvite checks an invite as Invite would and returns the lines it
// would add, changing nothing (--dry-run).
func (m Master) PlanInvite(r InviteRequest) (string, error) {
	if err := r.check(); err != nil {
		return "", err
	}
	data, _, err := m.Files.Read()
	if err != nil {
		return "", err
	}
	if r.PublicKey == nil {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return "", err
		}
		pub := k.PublicKey()
		r.PublicKey = &pub
	}
	_, next, _, err := r.added(data, "the cluster file")
	if err != nil {
		return "", err
	}
	if _, err := configs.LoadData(next, "the cluster file with the new node", configs.Options{Role: configs.RoleMaster}); err != nil {
		return "", err
	}
	return Changed(data, next), nil
}

// Invite adds the node to the master's file at the next free address (or
// Address), records the invite, has the running appliance reload the file
// and returns the join code. Under the lock, so that concurrent invites
// add one node each at addresses of their own. A reload that refuses the
// file takes the node out again (the rest of the file as others left it).
func (m Master) Invite(r InviteRequest) (Invited, error) {
	if err := r.check(); err != nil {
		return Invited{}, err
	}
	var key *wgtypes.Key
	if r.PublicKey == nil {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return Invited{}, err
		}
		pub := k.PublicKey()
		key, r.PublicKey = &k, &pub
	}
	var out Invited
	err := m.Files.Edit(func(data []byte, invites []Invite) ([]byte, []Invite, error) {
		n, next, cfg, err := r.added(data, "the cluster file")
		if err != nil {
			return nil, nil, err
		}
		if _, err := configs.LoadData(next, "the cluster file with the new node", configs.Options{Role: configs.RoleMaster}); err != nil {
			return nil, nil, err
		}
		out.Node, out.Lines, out.KeyInCode = n, Changed(data, next), key != nil
		out.Expires = m.now().Add(r.TTL).UTC().Truncate(time.Second)
		stub, err := configs.Excerpt(next, cfg.Cluster.Master().Name, n.Name)
		if err != nil {
			return nil, nil, err
		}
		if out.Code, err = (Code{Cluster: stub, Node: n.Name, Key: key, Expires: out.Expires}).Encode(); err != nil {
			return nil, nil, err
		}
		rec := Invite{Node: n.Name, PublicKey: n.PublicKey, Invited: m.now().UTC().Truncate(time.Second), Expires: out.Expires, Rotate: key != nil}
		return next, put(invites, rec), nil
	})
	if err != nil {
		return Invited{}, err
	}
	out.Running, err = m.reload(r.Name)
	return out, err
}

// reload has the running appliance apply the file; a refusal takes name
// out of the file and the invites again.
func (m Master) reload(name string) (running bool, err error) {
	if m.Reload == nil {
		return false, nil
	}
	err = m.Reload()
	switch {
	case errors.Is(err, ErrNoAppliance):
		return false, nil
	case err == nil:
		return true, nil
	}
	undo := m.Files.Edit(func(data []byte, invites []Invite) ([]byte, []Invite, error) {
		next, rerr := configs.RemoveNode(data, name)
		if rerr != nil {
			return nil, nil, rerr
		}
		return next, drop(invites, name), nil
	})
	if undo != nil {
		return true, fmt.Errorf("%w; and taking %s out of the file again failed: %v (fix: appliance remove %s)", err, name, undo, name)
	}
	return true, fmt.Errorf("%w (%s is not in the file)", err, name)
}

// Removed is a node removed.
type Removed struct {
	// Lines are the lines removed, with their numbers.
	Lines   string
	Running bool
	Sync    bool
}

// PlanRemove returns the lines Remove would take out, changing nothing.
func (m Master) PlanRemove(name string) (string, error) {
	data, _, err := m.Files.Read()
	if err != nil {
		return "", err
	}
	next, err := removed(data, name)
	if err != nil {
		return "", err
	}
	return Changed(data, next), nil
}

func removed(data []byte, name string) ([]byte, error) {
	cfg, err := masterCluster(data, "the cluster file")
	if err != nil {
		return nil, err
	}
	if name == cfg.Self.Name {
		return nil, badRequest("NAME", "a cluster cannot drop its master", "%s is the master, this node", name)
	}
	next, err := configs.RemoveNode(data, name)
	if err != nil {
		return nil, badRequest("NAME", "`appliance status` lists the nodes", "%v", err)
	}
	if _, err := configs.LoadData(next, "the cluster file without "+name, configs.Options{Role: configs.RoleMaster}); err != nil {
		return nil, err
	}
	return next, nil
}

// Remove takes the node's entry (and the comment lines right above it)
// out of the master's file, forgets its invite and has the running
// appliance reload.
func (m Master) Remove(name string) (Removed, error) {
	var out Removed
	err := m.Files.Edit(func(data []byte, invites []Invite) ([]byte, []Invite, error) {
		next, err := removed(data, name)
		if err != nil {
			return nil, nil, err
		}
		cl, _ := configs.Parse(data, "the cluster file")
		out.Lines, out.Sync = Changed(data, next), cl != nil && cl.Sync
		return next, drop(invites, name), nil
	})
	if err != nil || m.Reload == nil {
		return out, err
	}
	err = m.Reload()
	switch {
	case errors.Is(err, ErrNoAppliance):
		return out, nil
	case err != nil:
		return out, fmt.Errorf("%w (%s is still out of the file: put its entry back, or fix the file and systemctl reload wgk3s)", err, name)
	}
	out.Running = true
	return out, nil
}

// freeAddress is the address asked for, checked, or the next free one:
// after the highest in use, else the lowest free.
func freeAddress(cl *configs.Cluster, asked string) (netip.Addr, error) {
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
			return netip.Addr{}, badRequest("--address", "give a free IPv4 address inside network "+net.String(), "%q is not an address inside %s", asked, net)
		}
		if name, taken := used[a]; taken {
			return netip.Addr{}, badRequest("--address", "leave --address out for the next free one", "%s is %s's", a, name)
		}
		if !usable(a) {
			return netip.Addr{}, badRequest("--address", "pick another", "%s is %s's network or broadcast address", a, net)
		}
		return a, nil
	}
	for _, from := range []netip.Addr{top.Next(), net.Masked().Addr().Next()} {
		for a := from; net.Contains(a); a = a.Next() {
			if usable(a) {
				return a, nil
			}
		}
	}
	return netip.Addr{}, badRequest("", "widen it or remove a node", "network %s has no free address left", net)
}

// Changed renders the lines in which data and next differ, with their
// numbers: an addition only inserts ("+" lines of next), a removal only
// deletes ("-" lines of data).
func Changed(data, next []byte) string {
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
