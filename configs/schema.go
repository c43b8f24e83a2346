// Package configs holds the cluster file: its schema, its validation and the
// commented example shipped as /etc/wgk3s.yaml.
//
// The cluster file is identical on every node. Loading it is pure (Parse) and
// touches no system state; Load adds the checks that read this node's secret
// files and work out which entry is "this node".
package configs

import (
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Defaults applied to fields the file leaves out.
const (
	DefaultInterfaceName  = "wg0"
	DefaultListenPort     = 51820
	DefaultMTU            = 1420
	DefaultPrivateKeyFile = "/etc/wgk3s/private.key"
	DefaultKeepalive      = 25 * time.Second
	DefaultK3sBinary      = "/usr/local/bin/k3s"
	DefaultTokenFile      = "/etc/wgk3s/token"
	DefaultAgentTokenFile = "/etc/wgk3s/agent-token"
	DefaultStopGrace      = 30 * time.Second
	DefaultPath           = "/etc/wgk3s.yaml"
)

// MTU and keepalive bounds. 1280 is the IPv6 minimum that WireGuard also
// assumes; 9000 is a jumbo frame. Keepalive is a uint16 of seconds on the wire.
const (
	MinMTU       = 1280
	MaxMTU       = 9000
	MaxKeepalive = 65535 * time.Second
)

// Role is a node's part in the k3s cluster.
type Role string

// Roles.
const (
	RoleMaster Role = "master"
	RoleAgent  Role = "agent"
	// RoleServer is a k3s server beside the master: it joins the master's
	// embedded etcd and holds the server token. With servers in the file
	// the master starts k3s with --cluster-init.
	RoleServer Role = "server"
)

// ControlPlane reports whether a node of this role runs `k3s server`.
func (r Role) ControlPlane() bool { return r == RoleMaster || r == RoleServer }

// Mode selects the WireGuard implementation.
type Mode string

// Modes.
const (
	ModeAuto      Mode = "auto"
	ModeKernel    Mode = "kernel"
	ModeUserspace Mode = "userspace"
)

// Advertise selects the k3s --advertise-address.
type Advertise string

// Advertise choices.
const (
	AdvertiseWireGuard Advertise = "wireguard"
	AdvertiseExternal  Advertise = "external"
)

// EgressAuto means "the interface of the IPv4 default route".
const EgressAuto = "auto"

// iptables backends (firewall.backend).
const (
	BackendAuto   = "auto" // the backend that already holds more rules
	BackendLegacy = "legacy"
	BackendNFT    = "nft"
)

// Cluster is a validated cluster file with defaults filled in.
type Cluster struct {
	// File is the path the cluster was loaded from, for messages.
	File      string
	Network   netip.Prefix
	Interface Interface
	Nodes     []Node
	Firewall  Firewall
	K3s       K3s
	Metrics   Metrics
	Runtime   Runtime
	Snapshots Snapshots
	// Sync: the master serves this file and the token over wg0 and every
	// other node follows it (default true; `sync: false` turns it off).
	Sync bool
	// Data is the file as read, what the master serves.
	Data []byte

	lines *locator
}

// Snapshots is the snapshots section: a lone master's datastore, sealed
// and kept by the other nodes (package snapshot).
type Snapshots struct {
	Enabled bool
	// Interval is how often the master takes one (when the datastore
	// changed): at most this much is lost with the master's machine.
	Interval time.Duration
	// Keep is how many copies each node keeps.
	Keep int
	// Dir is where each node keeps them.
	Dir string
}

// Snapshot defaults and bounds.
const (
	DefaultSnapshotInterval = 10 * time.Minute
	MinSnapshotInterval     = 10 * time.Second
	MaxSnapshotInterval     = 24 * time.Hour
	DefaultSnapshotKeep     = 3
	MaxSnapshotKeep         = 100
	DefaultSnapshotDir      = "/var/lib/wgk3s/snapshots"
)

// Runtime is the runtime section: limits of the appliance process itself.
type Runtime struct {
	// MemoryLimit is the Go runtime's soft memory limit in bytes (0: none).
	// It keeps the heap near what is live; Inflight bounds what is live.
	MemoryLimit int64
	// BatchSize caps how many packets wireguard-go reads or sends at once
	// (userspace mode); 0 leaves wireguard-go's own (128 on Linux).
	BatchSize int
	// Inflight bounds how many packets wireguard-go holds per direction
	// (userspace mode); 0: no bound.
	Inflight int
}

// DefaultInflight is runtime.inflight_packets' default: with it the
// appliance peaked at 80 to 86 MiB under the benchmark's full load, at the
// reference wireguard-go's throughput (which peaked at 400 to 500 MiB),
// whatever the memory limit above 96MiB; see BENCHMARKS.md.
const DefaultInflight = 128

// MaxInflight is the largest runtime.inflight_packets (4 GiB of packet
// buffers: a bound that no longer bounds anything a server has).
const MaxInflight = 65536

// DefaultBatchSize is runtime.batch_size's default (see BENCHMARKS.md).
const DefaultBatchSize = 0

// MaxBatchSize is wireguard-go's own batch size on Linux, the largest cap
// that means anything.
const MaxBatchSize = 128

// DefaultMemoryLimit is runtime.memory_limit's default for a small
// cluster; each node adds DefaultMemoryLimitPerNode. Under full load the
// inflight bound keeps the live heap to a few dozen MiB; the limit keeps
// the garbage collector from letting the heap double over it. A reload of a
// big cluster file needs room of its own: a 1000-node reload took 44 ms
// under a 256MiB limit and 135 ms under 96MiB (see BENCHMARKS.md).
const (
	DefaultMemoryLimit        = 96 << 20
	DefaultMemoryLimitPerNode = 128 << 10
)

// Metrics is the metrics section: Prometheus metrics, off unless enabled.
type Metrics struct {
	Enabled bool
	// Listen is host:port; the default keeps them on the loopback.
	Listen string
}

// DefaultMetricsListen is where metrics are served when enabled.
const DefaultMetricsListen = "127.0.0.1:9586"

// Interface is the wg0 section.
type Interface struct {
	Name                string
	ListenPort          int
	MTU                 int
	Mode                Mode
	PrivateKeyFile      string
	PersistentKeepalive time.Duration
}

// Node is one entry of the nodes list.
type Node struct {
	Name    string
	Role    Role
	Address netip.Addr
	// Endpoint is how the other nodes reach this one, host:port.
	Endpoint Endpoint
	// ExternalIP is the public address: external_ip, else the endpoint's IP.
	// It is invalid when the endpoint is a DNS name and external_ip is absent.
	ExternalIP netip.Addr
	PublicKey  wgtypes.Key
}

// Endpoint is a host (IP literal or DNS name) and a UDP port.
type Endpoint struct {
	Host string
	Port uint16
}

// String returns host:port, bracketing IPv6 literals.
func (e Endpoint) String() string {
	return netJoinHostPort(e.Host, e.Port)
}

// IP returns the endpoint's address when Host is an IP literal.
func (e Endpoint) IP() (netip.Addr, bool) {
	a, err := netip.ParseAddr(e.Host)
	return a, err == nil
}

// Firewall is the firewall section.
type Firewall struct {
	// EgressInterface is EgressAuto or an interface name.
	EgressInterface string
	Masquerade      bool
	// Backend is auto, legacy or nft: which iptables the rules go into.
	Backend string
}

// K3s is the k3s section.
type K3s struct {
	Binary string
	// TokenFile holds the k3s server token: it joins servers and gives
	// full admin access, so it lives on the master (and servers) only.
	TokenFile string
	// AgentTokenFile holds the k3s agent token (--agent-token-file on the
	// master): it joins agents and nothing else. The master creates it;
	// agents hold only this one.
	AgentTokenFile string
	Advertise      Advertise
	ServerArgs     []string
	AgentArgs      []string
	// StopGracePeriod is how long k3s gets between SIGTERM and SIGKILL.
	StopGracePeriod time.Duration
	// ClusterCIDRs are the IPv4 pod and service networks of the cluster:
	// --cluster-cidr and --service-cidr from server_args, else k3s's
	// defaults. Every node reads them from the same file.
	ClusterCIDRs []netip.Prefix
	// PodCIDRs and ServiceCIDRs are the two parts of ClusterCIDRs.
	PodCIDRs, ServiceCIDRs []netip.Prefix
}

// Master returns the master node. A validated Cluster has exactly one.
func (c *Cluster) Master() Node {
	for _, n := range c.Nodes {
		if n.Role == RoleMaster {
			return n
		}
	}
	return Node{}
}

// Servers returns the nodes that run `k3s server`: the master first, then
// the servers in file order.
func (c *Cluster) Servers() []Node {
	out := []Node{c.Master()}
	for _, n := range c.Nodes {
		if n.Role == RoleServer {
			out = append(out, n)
		}
	}
	return out
}

// NodeByName returns the node called name.
func (c *Cluster) NodeByName(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Peers returns every node but self: the full mesh as seen from self.
func (c *Cluster) Peers(self string) []Node {
	peers := make([]Node, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		if n.Name != self {
			peers = append(peers, n)
		}
	}
	return peers
}

// raw mirrors the YAML document. Strings stay strings so that every
// semantic problem is found by validate and reported together with the rest.
type raw struct {
	Network   string       `yaml:"network"`
	Interface rawInterface `yaml:"interface"`
	Nodes     []rawNode    `yaml:"nodes"`
	Firewall  rawFirewall  `yaml:"firewall"`
	K3s       rawK3s       `yaml:"k3s"`
	Metrics   rawMetrics   `yaml:"metrics"`
	Runtime   rawRuntime   `yaml:"runtime"`
	Snapshots rawSnapshots `yaml:"snapshots"`
	Sync      *bool        `yaml:"sync"`
}

type rawSnapshots struct {
	Enabled  *bool        `yaml:"enabled"`
	Interval string       `yaml:"interval"`
	Keep     *wholeNumber `yaml:"keep"`
	Dir      string       `yaml:"dir"`
}

type rawRuntime struct {
	MemoryLimit string       `yaml:"memory_limit"`
	BatchSize   *wholeNumber `yaml:"batch_size"`
	Inflight    *wholeNumber `yaml:"inflight_packets"`
}

type rawMetrics struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

type rawInterface struct {
	Name                string       `yaml:"name"`
	ListenPort          *wholeNumber `yaml:"listen_port"`
	MTU                 *wholeNumber `yaml:"mtu"`
	Mode                string       `yaml:"mode"`
	PrivateKeyFile      string       `yaml:"private_key_file"`
	PersistentKeepalive string       `yaml:"persistent_keepalive"`
}

type rawNode struct {
	Name       string `yaml:"name"`
	Role       string `yaml:"role"`
	Address    string `yaml:"address"`
	Endpoint   string `yaml:"endpoint"`
	ExternalIP string `yaml:"external_ip"`
	PublicKey  string `yaml:"public_key"`
}

type rawFirewall struct {
	EgressInterface string `yaml:"egress_interface"`
	Masquerade      *bool  `yaml:"masquerade"`
	Backend         string `yaml:"backend"`
}

type rawK3s struct {
	Binary          string   `yaml:"binary"`
	TokenFile       string   `yaml:"token_file"`
	AgentTokenFile  string   `yaml:"agent_token_file"`
	Advertise       string   `yaml:"advertise"`
	ServerArgs      []string `yaml:"server_args"`
	AgentArgs       []string `yaml:"agent_args"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
}
