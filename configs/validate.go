package configs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// validate checks every field of r, reports each problem to c, and returns
// the cluster with defaults filled in. The result is meaningful only when c
// collected no error.
func validate(r *raw, c *collector) *Cluster {
	cl := &Cluster{}
	cl.Network = validateNetwork(r.Network, c)
	cl.Interface = validateInterface(&r.Interface, c)
	cl.Nodes = validateNodes(r.Nodes, cl.Network, c)
	cl.Sync = r.Sync == nil || *r.Sync
	cl.Firewall = validateFirewall(&r.Firewall, c)
	if cl.Firewall.EgressInterface == cl.Interface.Name {
		c.add("interface.name", "set interface.name to a free name such as wg0; the egress interface is the one that reaches the internet",
			"%s is also firewall.egress_interface", quote(cl.Interface.Name))
	}
	cl.K3s = validateK3s(&r.K3s, cl, c)
	cl.Metrics = validateMetrics(&r.Metrics, c)
	cl.Runtime = validateRuntime(&r.Runtime, len(cl.Nodes), c)
	cl.Snapshots = validateSnapshots(&r.Snapshots, c)
	return cl
}

func validateSnapshots(r *rawSnapshots, c *collector) Snapshots {
	s := Snapshots{Enabled: r.Enabled == nil || *r.Enabled, Interval: DefaultSnapshotInterval, Keep: DefaultSnapshotKeep, Dir: DefaultSnapshotDir}
	if r.Dir != "" {
		if !filepath.IsAbs(r.Dir) || filepath.Clean(r.Dir) == "/" {
			c.add("snapshots.dir", "write an absolute directory such as "+DefaultSnapshotDir, "%q is not an absolute directory of its own", r.Dir)
		} else {
			s.Dir = filepath.Clean(r.Dir)
		}
	}
	if r.Interval != "" {
		d, err := time.ParseDuration(r.Interval)
		if err != nil || d < MinSnapshotInterval || d > MaxSnapshotInterval {
			c.add("snapshots.interval", "write a duration from 10s to 24h, such as 10m", "%q is not an interval", r.Interval)
		} else {
			s.Interval = d
		}
	}
	if r.Keep != nil {
		if n := int(*r.Keep); n < 1 || n > MaxSnapshotKeep {
			c.add("snapshots.keep", fmt.Sprintf("write a whole number from 1 to %d, such as %d", MaxSnapshotKeep, DefaultSnapshotKeep), "%d copies is out of range", n)
		} else {
			s.Keep = n
		}
	}
	return s
}

func validateRuntime(r *rawRuntime, nodes int, c *collector) Runtime {
	rt := Runtime{MemoryLimit: DefaultMemoryLimit + int64(nodes)*DefaultMemoryLimitPerNode,
		BatchSize: DefaultBatchSize, Inflight: DefaultInflight}
	if r.Inflight != nil {
		if n := int(*r.Inflight); n != 0 && (n < 64 || n > MaxInflight) {
			c.add("runtime.inflight_packets", fmt.Sprintf("write a whole number from 64 to %d, or 0 for no bound", MaxInflight), "%d is out of range", n)
		} else {
			rt.Inflight = n
		}
	}
	if r.BatchSize != nil {
		if b := int(*r.BatchSize); b < 0 || b > MaxBatchSize {
			c.add("runtime.batch_size", fmt.Sprintf("write a whole number from 1 to %d, or 0 for wireguard-go's own (%d)", MaxBatchSize, MaxBatchSize), "%d is out of range", b)
		} else {
			rt.BatchSize = b
		}
	}
	if r.MemoryLimit == "" {
		return rt
	}
	n, problem := parseSize(r.MemoryLimit)
	switch {
	case problem != "":
		c.add("runtime.memory_limit", "write a size with KiB, MiB or GiB, such as 96MiB or 1GiB, or off for no limit", "%q is not a memory limit: %v", r.MemoryLimit, errors.New(problem))
	case n == 0 && r.MemoryLimit != "off":
		c.add("runtime.memory_limit", "write off for no limit, or a size of at least 32MiB such as 96MiB", "%q would be no memory at all", r.MemoryLimit)
	case n != 0 && n < 32<<20:
		c.add("runtime.memory_limit", "write a size of at least 32MiB, such as 96MiB", "%q is less than the 32MiB the appliance needs", r.MemoryLimit)
	default:
		rt.MemoryLimit = n
	}
	return rt
}

// parseSize reads "off", or a whole number with an optional KiB, MiB or GiB
// suffix, as bytes; problem says what is wrong with anything else.
func parseSize(s string) (n int64, problem string) {
	if s == "off" {
		return 0, ""
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if num, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = num, m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err == nil && n >= 0 && n <= (1<<62)/mult:
		return n * mult, ""
	case err == nil:
		return 0, "it is too big"
	}
	digits := strings.TrimRight(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
	if unit := s[len(digits):]; unit != "" && digits != "" {
		if _, err := strconv.ParseInt(digits, 10, 64); err == nil {
			return 0, unit + " is not a unit the appliance knows (KiB, MiB, GiB; 1TiB = 1024GiB)"
		}
	}
	return 0, "not a whole number with KiB, MiB or GiB"
}

func validateMetrics(r *rawMetrics, c *collector) Metrics {
	m := Metrics{Enabled: r.Enabled, Listen: r.Listen}
	if m.Listen == "" {
		m.Listen = DefaultMetricsListen
		return m
	}
	host, port, err := net.SplitHostPort(m.Listen)
	p, perr := strconv.Atoi(port)
	_, aerr := netip.ParseAddr(host)
	if err != nil || perr != nil || p < 1 || p > 65535 || (host != "" && aerr != nil) {
		c.add("metrics.listen", "write IP:PORT such as "+DefaultMetricsListen+" (keep 127.0.0.1 unless a scraper elsewhere needs it)", "%q is not IP:PORT", m.Listen)
	} else if owner, taken := clusterPorts[p]; taken {
		c.add("metrics.listen", "pick another port, such as the default 9586", "port %d is %s's", p, owner)
	}
	return m
}

// clusterPorts are the TCP ports k3s and its components listen on; the
// metrics listener must not take one.
var clusterPorts = map[int]string{
	2379:  "etcd",
	2380:  "etcd",
	6443:  "the k3s API server",
	6444:  "the k3s API server (behind its load balancer)",
	10249: "kube-proxy's metrics",
	10250: "the kubelet",
	10256: "kube-proxy's health check",
	10257: "the controller manager",
	10259: "the scheduler",
}

func validateNetwork(s string, c *collector) netip.Prefix {
	const field = "network"
	if s == "" {
		c.add(field, "add `network: 192.168.2.0/24` (the WireGuard subnet, the same on every node)", "missing")
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		c.add(field, "write an IPv4 prefix such as 192.168.2.0/24", "%q is not an IP prefix", s)
	case !p.Addr().Is4():
		c.add(field, "use an IPv4 prefix such as 192.168.2.0/24 (IPv6 is not supported yet)", "%q is not IPv4", s)
	case p.Bits() > 30:
		c.add(field, "use a prefix of /30 or shorter, such as /24", "%q leaves no room for two nodes", s)
	default:
		// The seed writes 192.168.1.1/24; accept it and mean the network.
		return p.Masked()
	}
	return netip.Prefix{}
}

func validateInterface(r *rawInterface, c *collector) Interface {
	in := Interface{
		Name:                r.Name,
		ListenPort:          DefaultListenPort,
		MTU:                 DefaultMTU,
		Mode:                Mode(r.Mode),
		PrivateKeyFile:      r.PrivateKeyFile,
		PersistentKeepalive: DefaultKeepalive,
	}
	if in.Name == "" {
		in.Name = DefaultInterfaceName
	} else if !validIfName(in.Name) {
		c.add("interface.name", "use 1 to 15 letters, digits, '-' or '_', such as wg0", "%q is not a valid Linux interface name", in.Name)
	}
	if r.ListenPort != nil {
		in.ListenPort = int(*r.ListenPort)
		if in.ListenPort < 1 || in.ListenPort > 65535 {
			c.add("interface.listen_port", "use a UDP port from 1 to 65535, such as 51820", "%d is out of range", in.ListenPort)
		}
	}
	if r.MTU != nil {
		in.MTU = int(*r.MTU)
		if in.MTU < MinMTU || in.MTU > MaxMTU {
			c.add("interface.mtu", fmt.Sprintf("use a value from %d to %d; 1420 suits most clouds", MinMTU, MaxMTU), "%d is out of range", in.MTU)
		}
	}
	switch in.Mode {
	case "":
		in.Mode = ModeAuto
	case ModeAuto, ModeKernel, ModeUserspace:
	default:
		c.add("interface.mode", "use auto, kernel or userspace", "%q is not a mode", r.Mode)
	}
	if in.PrivateKeyFile == "" {
		in.PrivateKeyFile = DefaultPrivateKeyFile
	} else if !filepath.IsAbs(in.PrivateKeyFile) {
		c.add("interface.private_key_file", "write an absolute path such as "+DefaultPrivateKeyFile, "%q is not an absolute path", in.PrivateKeyFile)
	}
	if r.PersistentKeepalive != "" {
		d, ok := parseKeepalive(r.PersistentKeepalive)
		if !ok {
			c.add("interface.persistent_keepalive", "write whole seconds from 0 (off) to 65535, such as 25s", "%q is not a keepalive interval", r.PersistentKeepalive)
		}
		in.PersistentKeepalive = d
	}
	return in
}

// parseKeepalive accepts a Go duration ("25s") or bare seconds ("25", the
// wg(8) form) and "off". WireGuard carries it as a uint16 of seconds.
func parseKeepalive(s string) (time.Duration, bool) {
	if s == "off" {
		return 0, true
	}
	if n, err := strconv.Atoi(s); err == nil {
		s = strconv.Itoa(n) + "s"
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > MaxKeepalive || d%time.Second != 0 {
		return 0, false
	}
	return d, true
}

func validateNodes(rs []rawNode, network netip.Prefix, c *collector) []Node {
	if len(rs) == 0 {
		c.add("nodes", "add one entry per server; `appliance init` prints an entry to paste", "no nodes are listed")
		return nil
	}
	nodes := make([]Node, len(rs))
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	keys := map[wgtypes.Key]int{}
	var masters []int
	for i := range rs {
		r, p := &rs[i], fmt.Sprintf("nodes[%d]", i)
		n := &nodes[i]
		n.Name = r.Name
		validateNodeName(p, r.Name, names, i, c)
		n.Role = Role(r.Role)
		switch n.Role {
		case RoleMaster:
			masters = append(masters, i)
		case RoleAgent, RoleServer:
		case "":
			c.add(p+".role", "add `role: master`, `role: server` or `role: agent`", "missing")
		default:
			c.add(p+".role", "use master, server (another k3s server, with etcd) or agent", "%q is not a role", r.Role)
		}
		n.Address = validateAddress(p, r.Address, network, addrs, i, c)
		n.Endpoint = validateEndpoint(p, r, c)
		n.ExternalIP = validateExternalIP(p, r.ExternalIP, n.Endpoint, c)
		n.PublicKey = validatePublicKey(p, r.PublicKey, keys, i, c)
	}
	switch len(masters) {
	case 0:
		c.add("nodes", "give exactly one node `role: master`", "no node has role master")
	case 1:
		if ep := fmt.Sprintf("nodes[%d].endpoint", masters[0]); nodes[masters[0]].Endpoint.Host == "" && !c.skip[ep] && !c.has(ep) {
			c.add(fmt.Sprintf("nodes[%d].endpoint", masters[0]), "add the master's public IP or DNS name and port, such as 203.0.113.10:51820", "missing: the agents need it to reach the master")
		}
	default:
		for _, i := range masters[1:] {
			c.add(fmt.Sprintf("nodes[%d].role", i), fmt.Sprintf("keep exactly one master (%s) and make the others `role: server` or `role: agent`", nodes[masters[0]].Name), "a second master")
		}
	}
	return nodes
}

// nodeNameRE is a Kubernetes node name: an RFC 1123 subdomain.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func validateNodeName(p, name string, seen map[string]int, i int, c *collector) {
	field := p + ".name"
	switch {
	case name == "":
		c.add(field, "add `name: k3s-node-1`; it becomes the k3s node name", "missing")
	case !ValidNodeName(name):
		c.add(field, "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, such as k3s-node-1", "%q is not a valid Kubernetes node name", name)
	default:
		if j, dup := seen[name]; dup {
			c.add(field, "give every node its own name", "%q is already used by nodes[%d]", name, j)
			return
		}
		seen[name] = i
	}
}

// ValidNodeName reports whether name is a valid Kubernetes node name.
func ValidNodeName(name string) bool {
	return len(name) <= 253 && nodeNameRE.MatchString(name)
}

func validateAddress(p, s string, network netip.Prefix, seen map[netip.Addr]int, i int, c *collector) netip.Addr {
	field := p + ".address"
	if s == "" {
		c.add(field, "add this node's wg0 address, such as 192.168.2.2", "missing")
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		c.add(field, "write a plain IPv4 address without a prefix, such as 192.168.2.2", "%q is not an IP address", s)
		return netip.Addr{}
	}
	if !network.IsValid() {
		return a // the network's own error was reported
	}
	switch {
	case !network.Contains(a):
		c.add(field, "pick a free address inside "+network.String(), "%s is outside network %s", a, network)
	case a == network.Addr():
		c.add(field, "pick a host address such as "+network.Addr().Next().String(), "%s is the network address of %s", a, network)
	case a == broadcast(network):
		c.add(field, "pick a host address below "+a.String(), "%s is the broadcast address of %s", a, network)
	default:
		if j, dup := seen[a]; dup {
			c.add(field, "give every node its own address", "%s is already used by nodes[%d]", a, j)
			break
		}
		seen[a] = i
	}
	return a
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 1 << (7 - uint(i%8))
	}
	return netip.AddrFrom4(b)
}

func validateEndpoint(p string, r *rawNode, c *collector) Endpoint {
	if r.Endpoint == "" {
		return Endpoint{} // allowed for agents: the agent dials out and keepalive holds its NAT open
	}
	ep, err := ParseEndpoint(r.Endpoint)
	if err != nil {
		c.add(p+".endpoint", "write host:port, such as 203.0.113.10:51820 or node1.example.net:51820", "%v", err)
	}
	return ep
}

// ParseEndpoint parses host:port where host is an IP literal or a DNS name.
func ParseEndpoint(s string) (Endpoint, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%s is not host:port", quote(s))
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return Endpoint{}, fmt.Errorf("port %s is not from 1 to 65535", quote(portStr))
	}
	if _, err := netip.ParseAddr(host); err != nil && !ValidHostname(host) {
		return Endpoint{}, fmt.Errorf("host %s is neither an IP address nor a DNS name", quote(host))
	}
	return Endpoint{Host: host, Port: uint16(port)}, nil
}

func validateExternalIP(p, s string, ep Endpoint, c *collector) netip.Addr {
	if s == "" {
		a, _ := ep.IP()
		return a
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		c.add(p+".external_ip", "write the node's public IP address, such as 203.0.113.10, or remove the key to use the endpoint's IP", "%q is not an IP address", s)
	}
	return a
}

func validatePublicKey(p, s string, seen map[wgtypes.Key]int, i int, c *collector) wgtypes.Key {
	field := p + ".public_key"
	if s == "" {
		c.add(field, "run `appliance init` on that node (or `appliance pubkey < private.key`) and paste the key", "missing")
		return wgtypes.Key{}
	}
	k, err := wgtypes.ParseKey(s)
	if err != nil {
		c.add(field, "paste the 44-character base64 key printed by `appliance pubkey` on that node", "not a WireGuard key (want base64 of 32 bytes)")
		return wgtypes.Key{}
	}
	if err := CheckPublicKey(k); err != nil {
		c.add(field, "paste the key `appliance pubkey < /etc/wgk3s/private.key` prints on that node", "%s is %v", s, err)
		return wgtypes.Key{}
	}
	if j, dup := seen[k]; dup {
		c.add(field, "each node needs its own key pair; run `appliance init` on the node that copied it", "the same key as nodes[%d]", j)
		return k
	}
	seen[k] = i
	return k
}

func validateFirewall(r *rawFirewall, c *collector) Firewall {
	fw := Firewall{EgressInterface: r.EgressInterface, Masquerade: true}
	if fw.EgressInterface == "" {
		fw.EgressInterface = EgressAuto
	} else if fw.EgressInterface != EgressAuto && !validIfName(fw.EgressInterface) {
		c.add("firewall.egress_interface", "write auto (the default route's interface) or an interface name such as eth0", "%q is not a valid interface name", fw.EgressInterface)
	}
	if r.Masquerade != nil {
		fw.Masquerade = *r.Masquerade
	}
	switch fw.Backend = r.Backend; fw.Backend {
	case "":
		fw.Backend = BackendAuto
	case BackendAuto, BackendLegacy, BackendNFT:
	default:
		c.add("firewall.backend", "use auto (detect the iptables in use), legacy or nft", "%q is not an iptables backend", r.Backend)
	}
	return fw
}

func validateK3s(r *rawK3s, cl *Cluster, c *collector) K3s {
	k := K3s{
		Binary:          r.Binary,
		TokenFile:       r.TokenFile,
		AgentTokenFile:  r.AgentTokenFile,
		Advertise:       Advertise(r.Advertise),
		ServerArgs:      r.ServerArgs,
		AgentArgs:       r.AgentArgs,
		StopGracePeriod: DefaultStopGrace,
	}
	if k.Binary == "" {
		k.Binary = DefaultK3sBinary
	} else if !filepath.IsAbs(k.Binary) {
		c.add("k3s.binary", "write an absolute path such as "+DefaultK3sBinary, "%q is not an absolute path", k.Binary)
	}
	if k.TokenFile == "" {
		k.TokenFile = DefaultTokenFile
	} else if !filepath.IsAbs(k.TokenFile) {
		c.add("k3s.token_file", "write an absolute path such as "+DefaultTokenFile, "%q is not an absolute path", k.TokenFile)
	}
	if k.AgentTokenFile == "" {
		k.AgentTokenFile = DefaultAgentTokenFile
	} else if !filepath.IsAbs(k.AgentTokenFile) {
		c.add("k3s.agent_token_file", "write an absolute path such as "+DefaultAgentTokenFile, "%q is not an absolute path", k.AgentTokenFile)
	}
	if k.AgentTokenFile == k.TokenFile {
		c.add("k3s.agent_token_file", "give the agent token its own file, such as "+DefaultAgentTokenFile, "it is the same file as k3s.token_file; agents must not hold the server token")
	}
	switch k.Advertise {
	case "":
		k.Advertise = AdvertiseWireGuard
	case AdvertiseWireGuard:
	case AdvertiseExternal:
		if m := cl.Master(); m.Name != "" && !m.ExternalIP.IsValid() {
			c.add("k3s.advertise", "give the master an external_ip, or use advertise: wireguard", "external needs the master's public IP, but its endpoint is a DNS name and it has no external_ip")
		}
	default:
		c.add("k3s.advertise", "use wireguard (agents reach the API server through the tunnel) or external (the seed's public IP)", "%q is not a choice", r.Advertise)
	}
	validateExtraArgs("k3s.server_args", r.ServerArgs, c)
	validateExtraArgs("k3s.agent_args", r.AgentArgs, c)
	k.PodCIDRs, k.ServiceCIDRs = clusterCIDRs(r.ServerArgs, c)
	k.ClusterCIDRs = append(slices.Clone(k.PodCIDRs), k.ServiceCIDRs...)
	if r.StopGracePeriod != "" {
		d, err := time.ParseDuration(r.StopGracePeriod)
		if err != nil || d < time.Second || d > 10*time.Minute {
			c.add("k3s.stop_grace_period", "write a duration from 1s to 10m, such as 30s", "%q is not a grace period", r.StopGracePeriod)
		} else {
			k.StopGracePeriod = d
		}
	}
	return k
}

func validIfName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$`)

// ValidHostname reports whether h is a DNS name (RFC 1123 labels). A name
// made of digits and dots only is a mistyped IP, not a name.
func ValidHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	numeric := true
	for _, l := range strings.Split(h, ".") {
		if !hostLabelRE.MatchString(l) {
			return false
		}
		if strings.Trim(l, "0123456789") != "" {
			numeric = false
		}
	}
	return !numeric
}

func netJoinHostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
