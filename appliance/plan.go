// Package appliance is the node's lifecycle: the Plan, worked out once
// from a loaded cluster file and the host, and the App that applies it:
// start order with undo, reload with rollback, stop order, and a part that
// fails stopping the others. `appliance check` prints a Plan; the running
// appliance applies one.
package appliance

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/paths"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
)

// Plan is everything this node will do for one cluster file on one host,
// derived once. A running App keeps the plan it applied last, so a
// rollback re-applies that plan and never derives anything again.
type Plan struct {
	Config *configs.Config
	// Mode is the WireGuard implementation expected on this host and why.
	// The tunnel makes the final choice when it creates the link; a plan
	// only looks for the module.
	Mode tunnel.Choice
	// Egress is firewall.egress_interface resolved to an interface name.
	Egress   string
	Tunnel   tunnel.Config
	Firewall firewall.Desired
	K3s      K3sCommand
	Sync     SyncPlan
	// Snapshots is this node's part in keeping a lone master's datastore.
	Snapshots SnapshotPlan
	// Paths is what package paths needs from the file: the relay and the
	// peers, with whether the file gives each an endpoint.
	Paths paths.Config
	// Facts are the platform details found on the host, and Notes what
	// the appliance does about them, for `appliance check`.
	Facts Facts
	Notes []string
	// Warnings are allowed but risky choices, logged at start and shown
	// by check.
	Warnings []string
	// Problems are what keeps this host from running the plan; the
	// appliance refuses to start (or reload) with any.
	Problems []error
}

// SyncPlan is how this node takes part in handing the cluster file and the
// tokens around over wg0 (package meshsync).
type SyncPlan struct {
	Enabled bool
	// Serve is true on the master and the servers: they serve the file
	// they run and the tokens.
	Serve bool
	// Follow is true on every node but the master: it follows the master's
	// file (a server follows it too, and serves what it took).
	Follow bool
	// Master is where the master serves: its wg address, meshsync's port.
	Master netip.AddrPort
	// Listen is where this node serves (its wg address), when it serves.
	Listen netip.AddrPort
	// Sources are who a follower asks: the master, then the servers (not
	// itself), each by its key.
	Sources []meshsync.Source
	// Followers are the nodes this node serves (every other node), known
	// by their keys; each is handed the token of its role.
	Followers []meshsync.Node
}

// K3sCommand is the supervised k3s child.
type K3sCommand struct {
	Binary string
	// Args is argv without the binary: "server ..." or "agent ...".
	Args []string
	// WaitFor are the API addresses a node waits for through the tunnel
	// before its first start, one of which must answer: every server's on
	// an agent, the master's on a server, none on the master.
	WaitFor   []string
	StopGrace time.Duration
	// TokenFile is the token k3s reads (--token-file): the server token on
	// the master and the servers, the agent token on an agent.
	TokenFile string
	// FetchToken: a follower with sync on fetches a missing TokenFile from
	// the master before k3s first starts.
	FetchToken bool
	// AgentTokenFile is the agent token the master gives k3s
	// (--agent-token-file); the master creates it when missing ("" on an
	// agent).
	AgentTokenFile string
}

// Role is "server" or "agent", the k3s subcommand.
func (k K3sCommand) Role() string { return k.Args[0] }

// NewPlan works out what cfg means on host h. It reads the host and changes
// nothing; what the host lacks is listed in Problems.
func NewPlan(cfg *configs.Config, h Host) *Plan {
	cl := cfg.Cluster
	p := &Plan{Config: cfg, Tunnel: tunnel.FromCluster(cfg)}
	release, err := h.KernelRelease()
	if err != nil {
		release = "unknown"
	}
	p.Mode, err = tunnel.Choose(cl.Interface.Mode, release, h.WireGuardModule)
	if err != nil {
		p.Problems = append(p.Problems, err)
	}
	p.Egress, err = h.Egress(cl.Firewall.EgressInterface)
	if err != nil {
		p.Problems = append(p.Problems, err)
		p.Egress = "<" + cl.Firewall.EgressInterface + ">"
	}
	if err := checkInterface(cl.Interface.Name, p.Egress, h); err != nil {
		p.Problems = append(p.Problems, err)
	}
	if err := checkAddress(cfg, h); err != nil {
		p.Problems = append(p.Problems, err)
	}
	p.Firewall = firewall.FromCluster(cl, p.Egress, cl.K3s.ClusterCIDRs)
	p.Facts = facts(h, release, cl.K3s.Binary)
	p.K3s = K3sCommand{Binary: cl.K3s.Binary, Args: supervisor.Args(cfg), StopGrace: cl.K3s.StopGracePeriod}
	platform, notes := platformArgs(cfg, p.Facts)
	if len(platform) > 0 {
		// After the appliance's own flags, before the operator's.
		extra := len(cl.K3s.AgentArgs)
		if cfg.Self.Role.ControlPlane() {
			extra = len(cl.K3s.ServerArgs)
		}
		at := len(p.K3s.Args) - extra
		p.K3s.Args = append(p.K3s.Args[:at:at], append(platform, p.K3s.Args[at:]...)...)
	}
	p.Notes = append(notes, hostNotes(cfg, p.Facts)...)
	if servers := cl.Servers(); len(servers) > 1 {
		names := make([]string, len(servers))
		for i, n := range servers {
			names[i] = n.Name
		}
		p.Notes = append(p.Notes, fmt.Sprintf("k3s servers: %s, in embedded etcd (the master starts it with --cluster-init; a master that ran alone on sqlite moves its data into etcd at that start, which the reload that adds the first server makes); etcd %s, %s ms",
			strings.Join(names, ", "), supervisor.EtcdHeartbeat, supervisor.EtcdElection))
	}
	p.Warnings = warnings(cfg, p.Facts)
	if cfg.Self.Role == configs.RoleAgent && h.FileExists(cl.K3s.TokenFile) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("this agent holds %s, which is where the k3s server token lives (full admin of the cluster, joins servers); "+
			"an agent needs only the agent token (%s): remove it (rm %s) and, if it held the server token, rotate that on the master (README: \"Tokens\")",
			cl.K3s.TokenFile, cl.K3s.AgentTokenFile, cl.K3s.TokenFile))
	}
	p.planTokens(cfg)
	p.planSync(cfg)
	p.Snapshots = planSnapshots(cfg, p.K3s.Args)
	p.Notes = append(p.Notes, p.Snapshots.note(cfg))
	p.Paths = pathsConfig(cfg)
	if err := h.K3sPreflight(cl.K3s.Binary); err != nil {
		p.Problems = append(p.Problems, err)
	}
	return p
}

// planTokens says which token file k3s reads on this node, and whom it
// waits for before it starts.
func (p *Plan) planTokens(cfg *configs.Config) {
	cl := cfg.Cluster
	switch cfg.Self.Role {
	case configs.RoleMaster:
		p.K3s.TokenFile, p.K3s.AgentTokenFile = cl.K3s.TokenFile, cl.K3s.AgentTokenFile
	case configs.RoleServer:
		// A server joins the master's etcd: it waits for the master.
		p.K3s.WaitFor = []string{net.JoinHostPort(cl.Master().Address.String(), supervisor.APIPort)}
		p.K3s.TokenFile = cl.K3s.TokenFile
		p.K3s.FetchToken = cl.Sync
	default:
		// An agent starts against whichever server answers first.
		for _, n := range cl.Servers() {
			p.K3s.WaitFor = append(p.K3s.WaitFor, net.JoinHostPort(n.Address.String(), supervisor.APIPort))
		}
		p.K3s.TokenFile = cl.K3s.AgentTokenFile
		p.K3s.FetchToken = cl.Sync
	}
}

// planSync says whom this node follows and serves the file to.
func (p *Plan) planSync(cfg *configs.Config) {
	cl := cfg.Cluster
	if cl.Sync {
		p.Sync = SyncPlan{Enabled: true, Serve: cfg.Self.Role.ControlPlane(), Follow: cfg.Self.Role != configs.RoleMaster,
			Master: netip.AddrPortFrom(cl.Master().Address, meshsync.DefaultPort),
			Listen: netip.AddrPortFrom(cfg.Self.Address, meshsync.DefaultPort)}
		for _, n := range cl.Servers() {
			if n.Name != cfg.Self.Name {
				p.Sync.Sources = append(p.Sync.Sources, meshsync.Source{Name: n.Name, Addr: netip.AddrPortFrom(n.Address, meshsync.DefaultPort), Key: n.PublicKey})
			}
		}
		for _, n := range cfg.Peers() {
			p.Sync.Followers = append(p.Sync.Followers, meshsync.Node{Name: n.Name, Key: n.PublicKey, Addr: n.Address, Role: string(n.Role)})
		}
	}
}

// checkInterface refuses an interface.name that is the egress interface or
// an existing link this appliance did not make: the appliance never takes
// over or removes an interface that is not its own.
func checkInterface(name, egress string, h Host) error {
	if name == egress {
		return fmt.Errorf("interface.name %s is the egress interface (the one that reaches the internet); fix: set interface.name to a free name such as %s", name, tunnel.FreeName(name))
	}
	st, err := h.Link(name)
	if err != nil {
		return fmt.Errorf("interface.name %s: %w", name, err)
	}
	if st.Exists && !st.Ours {
		return tunnel.NotOursError(name, st)
	}
	return nil
}

// checkAddress refuses this node's wg address when another interface
// holds it: the kernel would then have two routes to the mesh, the other
// interface would win, and mesh traffic would be lost while the peers look
// reachable.
func checkAddress(cfg *configs.Config, h Host) error {
	name, addr := cfg.Cluster.Interface.Name, cfg.Self.Address
	owners, err := h.AddressOwners(addr)
	if err != nil {
		return fmt.Errorf("looking for %s on this host: %w", addr, err)
	}
	for _, o := range owners {
		if o != name {
			return fmt.Errorf("this node's address %s (nodes[].address of %s) is already on %s; the mesh would lose its traffic to that interface; "+
				"fix: remove it there (ip addr del %s dev %s) or give this node another address", addr, cfg.Self.Name, o, addr, o)
		}
	}
	return nil
}

func facts(h Host, release, k3s string) Facts {
	f := Facts{Kernel: release, Cgroup: h.CgroupVersion(), Firewalld: h.FirewalldActive(), SELinux: h.SELinux()}
	f.K3sVersion, f.K3sVersionErr = h.K3sVersion(k3s)
	if f.SELinux != "disabled" {
		f.K3sLabel = h.FileLabel(k3s)
	}
	return f
}

// Err is nil when the host can run the plan, else every problem, joined.
func (p *Plan) Err() error { return errors.Join(p.Problems...) }

// ErrRestartRequired is returned, wrapped, by RestartRequired.
var ErrRestartRequired = tunnel.ErrRestartRequired

// RestartRequired returns an error naming the first setting that differs
// between the running plan and the next one and cannot be changed in a
// running appliance, or nil when next can be applied by a reload. It is the
// one list of such settings.
func RestartRequired(running, next *Plan) error {
	a, b := running.Config.Cluster, next.Config.Cluster
	for _, c := range []struct{ field, from, to string }{
		{"interface.name", a.Interface.Name, b.Interface.Name},
		{"interface.mode", string(a.Interface.Mode), string(b.Interface.Mode)},
		{"firewall.backend", a.Firewall.Backend, b.Firewall.Backend},
		{"metrics", fmt.Sprint(a.Metrics), fmt.Sprint(b.Metrics)},
		{"k3s.stop_grace_period", a.K3s.StopGracePeriod.String(), b.K3s.StopGracePeriod.String()},
		{"sync", fmt.Sprint(a.Sync), fmt.Sprint(b.Sync)},
		{"runtime.batch_size", fmt.Sprint(a.Runtime.BatchSize), fmt.Sprint(b.Runtime.BatchSize)},
		{"runtime.inflight_packets", fmt.Sprint(a.Runtime.Inflight), fmt.Sprint(b.Runtime.Inflight)},
	} {
		if c.from != c.to {
			return fmt.Errorf("%s %s -> %s: %w (systemctl restart wgk3s)", c.field, c.from, c.to, ErrRestartRequired)
		}
	}
	return nil
}
