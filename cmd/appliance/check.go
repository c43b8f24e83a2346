package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
)

func runCheck(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "check", "[--role master|agent] [--config FILE] [--node NAME]")
	nf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := nf.options(false)
	if err != nil {
		return err
	}
	cfg, err := configs.Load(nf.config, opts)
	if err != nil {
		return err
	}
	p := makePlan(cfg, e.root)
	p.print(e.stdout)
	if len(p.problems) > 0 {
		return fmt.Errorf("the cluster file is valid, but this host cannot run it yet: %d problem(s) listed above", len(p.problems))
	}
	return nil
}

// plan is what the appliance would do on this host, worked out without
// changing anything.
type plan struct {
	cfg      *configs.Config
	choice   tunnel.Choice
	egress   string
	firewall firewall.Desired
	k3sArgv  []string
	problems []string
}

func makePlan(cfg *configs.Config, root string) *plan {
	p := &plan{cfg: cfg}
	cl := cfg.Cluster
	release, err := tunnel.Release()
	if err != nil {
		release = "unknown"
	}
	p.choice, err = tunnel.Choose(cl.Interface.Mode, release, tunnel.ModuleAvailable(root))
	if err != nil {
		p.problems = append(p.problems, err.Error())
	}
	p.egress, err = firewall.ResolveEgress(cl.Firewall.EgressInterface)
	if err != nil {
		p.problems = append(p.problems, err.Error())
		p.egress = "<" + cl.Firewall.EgressInterface + ">"
	}
	p.firewall = firewall.FromCluster(cl, p.egress)
	p.k3sArgv = append([]string{cl.K3s.Binary}, supervisor.Args(cfg)...)
	if err := supervisor.Preflight(cl.K3s.Binary, supervisor.SystemdUnitActive); err != nil {
		p.problems = append(p.problems, err.Error())
	}
	return p
}

func (p *plan) print(w io.Writer) {
	cfg, cl := p.cfg, p.cfg.Cluster
	self := cfg.Self
	fmt.Fprintf(w, "Plan for %s (%s), from %s. Nothing has been changed.\n\n", self.Name, self.Role, cl.File)

	fmt.Fprintf(w, "WireGuard\n")
	if p.choice.Mode != "" {
		fmt.Fprintf(w, "  mode         %s: %s\n", p.choice.Mode, p.choice.Reason)
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
	for _, s := range p.firewall.Sysctls {
		fmt.Fprintf(w, "  %s = %s\n", s.Key, s.Value)
	}
	fmt.Fprintf(w, "\nFirewall (iptables; egress %s)\n", p.egressNote())
	for _, r := range p.firewall.Jumps {
		fmt.Fprintf(w, "  %s\n", strings.Replace(r.String(), " -A ", " -I ", 1))
	}
	for _, r := range p.firewall.Rules {
		fmt.Fprintf(w, "  %s\n", r)
	}

	fmt.Fprintf(w, "\nk3s (started once %s is up; the token is read by k3s from %s)\n  %s\n",
		cl.Interface.Name, cl.K3s.TokenFile, strings.Join(p.k3sArgv, " "))

	if len(p.problems) > 0 {
		fmt.Fprintf(w, "\nProblems on this host\n")
		for _, pr := range p.problems {
			fmt.Fprintf(w, "  - %s\n", pr)
		}
	}
}

func (p *plan) egressNote() string {
	if p.cfg.Cluster.Firewall.EgressInterface == configs.EgressAuto {
		return p.egress + ", the default route's interface"
	}
	return p.egress
}

func keepalive(cl *configs.Cluster) string {
	if cl.Interface.PersistentKeepalive == 0 {
		return "off"
	}
	return cl.Interface.PersistentKeepalive.String()
}
