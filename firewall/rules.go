// Package firewall owns the forwarding sysctls and the iptables rules the
// tunnel needs, as a desired state: Plan says what should exist, and the
// controller makes the kernel match it and removes exactly what it added.
package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
)

// Chains the appliance owns. Each is reached by one jump from its built-in
// chain, so `iptables-save | grep wgk3s` shows everything and cleanup
// removes exactly this.
const (
	ChainInput       = "WGK3S-INPUT"
	ChainForward     = "WGK3S-FORWARD"
	ChainPostrouting = "WGK3S-POSTROUTING"
	// Tag starts every rule comment.
	Tag = "wgk3s"
)

// Rule is one iptables rule: table, chain and the rule spec as go-iptables
// takes it (everything after -A CHAIN).
type Rule struct {
	Table string
	Chain string
	Spec  []string
}

// String renders the rule the way iptables-save does, for humans.
func (r Rule) String() string {
	spec := make([]string, len(r.Spec))
	for i, s := range r.Spec {
		if strings.ContainsAny(s, " \"") {
			s = strconv.Quote(s)
		}
		spec[i] = s
	}
	return fmt.Sprintf("-t %s -A %s %s", r.Table, r.Chain, strings.Join(spec, " "))
}

// Sysctl is a kernel setting the tunnel needs, restored on stop.
type Sysctl struct{ Key, Value string }

// Params are the inputs of the plan.
type Params struct {
	Network    netip.Prefix // the WireGuard subnet
	Interface  string       // wg0
	ListenPort int          // WireGuard's UDP port
	Egress     string       // resolved egress interface (not "auto")
	Masquerade bool
	// ClusterCIDRs are the k3s pod and service networks (--cluster-cidr,
	// --service-cidr). Their traffic is accepted unless it comes in from
	// the egress interface, so that a catch-all REJECT (firewalld's)
	// cannot drop pod traffic between flannel.1 and cni0, or pods talking
	// to their node.
	ClusterCIDRs []netip.Prefix
}

// Desired is the complete state the firewall controller maintains.
type Desired struct {
	Sysctls []Sysctl
	// Jumps go into built-in chains (inserted first, ahead of a firewalld
	// REJECT catch-all); Rules go into the chains the appliance owns.
	Jumps []Rule
	Rules []Rule
}

// Plan returns the desired state for p. It replaces the manual procedure's
// sysctl lines and its four iptables commands, and accepts what the cluster
// needs ahead of a catch-all REJECT such as firewalld's (CentOS 7's default
// ends INPUT and FORWARD with `-j REJECT --reject-with icmp-host-prohibited`):
// WireGuard's UDP port; everything arriving on wg0 from the mesh (the k3s
// API, the kubelet, flannel's VXLAN: WireGuard has authenticated it); and
// the pod and service networks except from the egress interface. Nothing
// more is opened to the internet than the WireGuard port.
func Plan(p Params) Desired {
	d := Desired{
		Sysctls: []Sysctl{
			{"net.ipv4.ip_forward", "1"},
			{"net.ipv4.conf.all.proxy_arp", "1"},
		},
		Jumps: []Rule{
			jump("filter", "INPUT", ChainInput),
			jump("filter", "FORWARD", ChainForward),
		},
		Rules: []Rule{
			rule("filter", ChainInput, "return traffic", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
			rule("filter", ChainInput, "WireGuard UDP", "-p", "udp", "--dport", strconv.Itoa(p.ListenPort), "-j", "ACCEPT"),
			rule("filter", ChainInput, "from the mesh", "-i", p.Interface, "-s", p.Network.String(), "-j", "ACCEPT"),
			rule("filter", ChainForward, "return traffic", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
			rule("filter", ChainForward, "mesh forwarding", "-i", p.Interface, "-o", p.Interface, "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"),
		},
	}
	for _, c := range p.ClusterCIDRs {
		cidr := c.String()
		d.Rules = append(d.Rules,
			rule("filter", ChainInput, "k3s "+cidr+" to this node", "!", "-i", p.Egress, "-s", cidr, "-j", "ACCEPT"),
			rule("filter", ChainForward, "k3s "+cidr+" out", "!", "-i", p.Egress, "-s", cidr, "-j", "ACCEPT"),
			rule("filter", ChainForward, "k3s "+cidr+" in", "!", "-i", p.Egress, "-d", cidr, "-j", "ACCEPT"),
		)
	}
	if p.Masquerade {
		d.Jumps = append(d.Jumps, jump("nat", "POSTROUTING", ChainPostrouting))
		d.Rules = append(d.Rules, rule("filter", ChainForward, "mesh egress", "-i", p.Interface, "-o", p.Egress, "-s", p.Network.String(), "-j", "ACCEPT"))
		d.Rules = append(d.Rules, rule("nat", ChainPostrouting, "masquerade mesh egress",
			"-s", p.Network.String(), "-o", p.Egress, "-j", "MASQUERADE"))
	}
	return d
}

func jump(table, from, to string) Rule {
	return Rule{Table: table, Chain: from, Spec: []string{"-m", "comment", "--comment", Tag, "-j", to}}
}

func rule(table, chain, why string, spec ...string) Rule {
	return Rule{Table: table, Chain: chain, Spec: append([]string{"-m", "comment", "--comment", Tag + ": " + why}, spec...)}
}

// FromCluster is the desired state for a cluster file, with the egress
// interface already resolved (see ResolveEgress) and the k3s cluster and
// service networks known.
func FromCluster(cl *configs.Cluster, egress string, clusterCIDRs []netip.Prefix) Desired {
	return Plan(Params{
		Network: cl.Network, Interface: cl.Interface.Name, ListenPort: cl.Interface.ListenPort,
		Egress: egress, Masquerade: cl.Firewall.Masquerade, ClusterCIDRs: clusterCIDRs,
	})
}

// Equal reports whether d and e are the same desired state.
func (d Desired) Equal(e Desired) bool {
	return slices.Equal(d.Sysctls, e.Sysctls) &&
		slices.EqualFunc(d.Jumps, e.Jumps, Rule.equal) && slices.EqualFunc(d.Rules, e.Rules, Rule.equal)
}

func (r Rule) equal(s Rule) bool {
	return r.Table == s.Table && r.Chain == s.Chain && slices.Equal(r.Spec, s.Spec)
}
