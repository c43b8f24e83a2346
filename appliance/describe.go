package appliance

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
)

// Print writes the plan for a person: what `appliance check` shows.
func (p *Plan) Print(w io.Writer) {
	cfg, cl := p.Config, p.Config.Cluster
	self := cfg.Self
	fmt.Fprintf(w, "Plan for %s (%s), from %s. Nothing has been changed.\n\n", self.Name, self.Role, cl.File)

	fmt.Fprintf(w, "WireGuard\n")
	if p.Mode.Mode != "" {
		fmt.Fprintf(w, "  mode         %s: %s\n", p.Mode.Mode, p.Mode.Reason)
	}
	fmt.Fprintf(w, "  interface    %s, address %s, mtu %d, listening on udp/%d\n",
		cl.Interface.Name, netip.PrefixFrom(self.Address, cl.Network.Bits()), cl.Interface.MTU, cl.Interface.ListenPort)
	fmt.Fprintf(w, "  public key   %s\n", self.PublicKey)
	fmt.Fprintf(w, "  private key  read from %s\n\n", cl.Interface.PrivateKeyFile)

	peers := cfg.Peers()
	fmt.Fprintf(w, "Peers (full mesh: %d)\n", len(peers))
	for _, n := range peers {
		ep := n.Endpoint.String()
		if n.Endpoint.Host == "" {
			ep = "(none: where the master sees it, or when it connects)"
		} else if _, isIP := n.Endpoint.IP(); !isIP {
			ep += " (DNS, re-resolved while the handshake is stale)"
		}
		fmt.Fprintf(w, "  %-14s %-7s allowed-ips %s/32, endpoint %s, keepalive %s\n    key %s\n",
			n.Name, n.Role, n.Address, ep, keepalive(cl), n.PublicKey)
	}

	fmt.Fprintf(w, "\nSysctls (restored on stop)\n")
	for _, s := range p.Firewall.Sysctls {
		fmt.Fprintf(w, "  %s = %s\n", s.Key, s.Value)
	}
	fmt.Fprintf(w, "\nFirewall (iptables; egress %s)\n", p.egressNote())
	for _, r := range p.Firewall.Jumps {
		fmt.Fprintf(w, "  %s\n", strings.Replace(r.String(), " -A ", " -I ", 1))
	}
	for _, r := range p.Firewall.Rules {
		fmt.Fprintf(w, "  %s\n", r)
	}

	fmt.Fprintf(w, "\nk3s (started once %s is up)\n  %s\n", cl.Interface.Name, strings.Join(append([]string{p.K3s.Binary}, p.K3s.Args...), " "))
	for _, l := range p.tokenLines() {
		fmt.Fprintf(w, "  %s\n", l)
	}

	fmt.Fprintf(w, "\nSync (edit once)\n  %s\n", p.syncLine())

	fmt.Fprintf(w, "\nPaths (nodes behind NAT)\n")
	for _, l := range p.pathLines() {
		fmt.Fprintf(w, "  %s\n", l)
	}

	fmt.Fprintf(w, "\nMetrics\n  %s\n", metricsLine(cl.Metrics))

	fmt.Fprintf(w, "\nRuntime\n")
	for _, l := range p.runtimeLines() {
		fmt.Fprintf(w, "  %s\n", l)
	}

	fmt.Fprintf(w, "\nThis host (kernel %s)\n", p.Facts.Kernel)
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	for _, n := range p.Warnings {
		fmt.Fprintf(w, "  WARNING: %s\n", n)
	}

	if len(p.Problems) > 0 {
		fmt.Fprintf(w, "\nProblems on this host\n")
		for _, pr := range p.Problems {
			fmt.Fprintf(w, "  - %s\n", pr)
		}
	}
}

func (p *Plan) egressNote() string {
	if p.Config.Cluster.Firewall.EgressInterface == configs.EgressAuto {
		return p.Egress + ", the default route's interface"
	}
	return p.Egress
}

func keepalive(cl *configs.Cluster) string {
	if cl.Interface.PersistentKeepalive == 0 {
		return "off"
	}
	return cl.Interface.PersistentKeepalive.String()
}

func metricsLine(m configs.Metrics) string {
	if !m.Enabled {
		return "off (metrics.enabled: true serves Prometheus metrics on " + m.Listen + ")"
	}
	return "Prometheus metrics on http://" + m.Listen + "/metrics"
}

// tokenLines say which token files k3s reads here and where they come from.
func (p *Plan) tokenLines() []string {
	k := p.Config.Cluster.K3s
	if p.K3s.AgentTokenFile != "" {
		agent := "present"
		if configs.TokenMissing(k.AgentTokenFile) {
			agent = "missing: created (0600) when the appliance starts"
		}
		return []string{
			"server token  " + k.TokenFile + " (--token-file): full admin of the cluster; it stays on this node",
			"agent token   " + k.AgentTokenFile + " (--agent-token-file), " + agent + ": joins agents and nothing else; the agents get it over wg0",
		}
	}
	if p.Config.Self.Role == configs.RoleServer {
		return []string{"server token  " + k.TokenFile + " (--token-file), " + fetched(k.TokenFile, p.K3s.FetchToken) + ": joins this server to the master's etcd; full admin of the cluster",
			"agent token   " + k.AgentTokenFile + ", " + fetched(k.AgentTokenFile, p.K3s.FetchToken) + ": this server hands it to agents while the master does not answer"}
	}
	agent := fetched(k.AgentTokenFile, p.K3s.FetchToken)
	return []string{"agent token   " + k.AgentTokenFile + " (--token-file), " + agent + "; an agent never holds the server token"}
}

// fetched says whether a follower's token file is there, or fetched.
func fetched(path string, fetch bool) string {
	switch {
	case !configs.TokenMissing(path):
		return "present"
	case fetch:
		return "missing: fetched from the master over wg0 (0600) before k3s starts"
	}
	return "missing"
}

// syncLine says how this node takes part in handing the file round.
func (p *Plan) syncLine() string {
	s := p.Sync
	switch {
	case !s.Enabled:
		return "off (sync: false): copy the cluster file to every node and reload each after an edit; copy the agent token to the agents"
	case s.Serve && !s.Follow:
		return fmt.Sprintf("serving this file and the agent token on %s (bound to %s) to %d node(s); each request must carry a MAC keyed by that node's WireGuard key",
			s.Listen, p.Tunnel.Name, len(s.Followers))
	}
	line := fmt.Sprintf("following the master at %s over %s: its file replaces this one when it changes (validated as a reload would; one that needs a restart is written for the next start); requests and answers are authenticated with this node's WireGuard key",
		s.Master, p.Tunnel.Name)
	if len(s.Sources) > 1 {
		names := make([]string, 0, len(s.Sources)-1)
		for _, src := range s.Sources[1:] {
			names = append(names, src.Name)
		}
		line += "; while the master does not answer, it asks " + strings.Join(names, ", ")
	}
	if s.Serve {
		line += fmt.Sprintf("; as a server it serves what it took, and the tokens, on %s to %d node(s)", s.Listen, len(s.Followers))
	}
	return line
}

// pathLines say how this node reaches peers the file gives no endpoint,
// and how they reach it.
func (p *Plan) pathLines() []string {
	cfg, cl := p.Config, p.Config.Cluster
	var homeless, relays []string
	for _, n := range cl.Nodes {
		if n.Endpoint.Host == "" {
			homeless = append(homeless, n.Name)
		} else if n.Name != cfg.Self.Name {
			relays = append(relays, n.Name)
		}
	}
	k := cl.Interface.PersistentKeepalive
	var lines []string
	lines = append(lines, p.relayLine(relays))
	if k == 0 {
		lines = append(lines, "interface.persistent_keepalive is 0: no relaying (a quiet direct path would look dead); every peer is reached directly")
	} else if p.Mode.Mode == configs.ModeKernel {
		lines = append(lines, fmt.Sprintf("kernel mode: the kernel owns WireGuard's port, so this node sends no probes: a peer nothing came from directly within %s (two keepalives and 5 s) is reached through the first relay that answers, and its direct path is tried again every minute",
			2*k+5*time.Second))
	} else {
		lines = append(lines, "a direct path is watched by what comes back: one that stops answering probes is relayed within about 2 s, through the relay with the shortest round trip (the next one is kept ready); a relayed peer's direct addresses are probed every 2 s and it goes direct when one answers")
	}
	if cfg.Self.Endpoint.Host == "" {
		lines = append(lines, fmt.Sprintf("this node has no endpoint (behind NAT, or no fixed address): it keeps its NAT mapping open with a keepalive every %s "+
			"to the peers that have one, tells its peers the addresses it has on its own networks (two nodes behind one router go direct over their LAN), and is reached where the master sees it or through a relay; k3s gets no --node-external-ip", keepalive(cl)))
	}
	switch {
	case len(homeless) == 0:
		lines = append(lines, "every node has an endpoint")
	case !cl.Sync:
		lines = append(lines, fmt.Sprintf("without an endpoint: %s; sync is off, so nobody learns where they are: two of them reach each other through a relay only",
			strings.Join(homeless, ", ")))
	default:
		lines = append(lines, "without an endpoint: "+strings.Join(homeless, ", ")+"; their endpoints are learned from the master and the servers over the sync")
	}
	return lines
}

// relayLine says who relays, and whether this node does.
func (p *Plan) relayLine(relays []string) string {
	cfg := p.Config
	who := "relays: the nodes with an endpoint that run the userspace data path (" + strings.Join(relays, ", ") + "); "
	if len(relays) == 0 {
		who = "relays: none (no other node has an endpoint); "
	}
	switch {
	case cfg.Self.Endpoint.Host == "":
		return who + "this node has no endpoint, so it relays for nobody"
	case p.Mode.Mode == configs.ModeKernel:
		return who + "this node runs kernel WireGuard, which owns the UDP port, so it relays for nobody (interface.mode: userspace makes it a relay)"
	}
	return who + "this node relays too, on its WireGuard port (no other port, no setting): it forwards the datagrams of two nodes that cannot reach each other directly, still encrypted, between the file's nodes only; it tells the others where it sees each node from"
}

// runtimeLines describe the runtime section as it applies on this host.
func (p *Plan) runtimeLines() []string {
	rt := p.Config.Cluster.Runtime
	limit := "off (runtime.memory_limit: off)"
	if rt.MemoryLimit > 0 {
		limit = fmt.Sprintf("%d MiB", rt.MemoryLimit>>20)
	}
	inflight := "no bound (0)"
	if rt.Inflight > 0 {
		inflight = fmt.Sprintf("%d per direction", rt.Inflight)
	}
	batch := "wireguard-go's own (128)"
	if rt.BatchSize > 0 {
		batch = fmt.Sprint(rt.BatchSize)
	}
	lines := []string{"memory limit      " + limit, "inflight packets  " + inflight, "batch size        " + batch}
	if p.Mode.Mode == configs.ModeKernel {
		lines = append(lines, "in kernel mode the inflight bound and the batch size do nothing: the kernel's WireGuard holds the packets")
	}
	return lines
}

// Check loads the cluster file at path and prints this node's plan
// (`appliance check`); it fails when the host cannot run it yet.
func Check(w io.Writer, path string, opts configs.Options, h Host) error {
	cfg, err := configs.Load(path, opts)
	if err != nil {
		return err
	}
	p := NewPlan(cfg, h)
	p.Print(w)
	if len(p.Problems) > 0 {
		return fmt.Errorf("the cluster file is valid, but this host cannot run it yet: %d problem(s) listed above", len(p.Problems))
	}
	return nil
}
