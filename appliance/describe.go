package appliance

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

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
			ep = "(none: learned when it connects)"
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

	fmt.Fprintf(w, "\nk3s (started once %s is up; the token is read by k3s from %s)\n  %s\n",
		cl.Interface.Name, cl.K3s.TokenFile, strings.Join(append([]string{p.K3s.Binary}, p.K3s.Args...), " "))

	fmt.Fprintf(w, "\nMetrics\n  %s\n", metricsLine(cl.Metrics))

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
