//go:build linux

package testnet

import (
	"fmt"
	"os/exec"
	"strings"
)

// NAT is how a server's router maps it to the router's public address.
type NAT int

const (
	// OneToOne is a cloud provider's NAT: the public address is the
	// server's, every port forwarded (DNAT in, SNAT out).
	OneToOne NAT = iota
	// Cone is a home router with no port forwards (MASQUERADE): one
	// mapping per source address and port, kept for every destination
	// (the port is kept when free); a packet comes in only from an
	// address and port the mapping sent to.
	Cone
	// Symmetric is a home router that maps each destination to a new
	// random port (MASQUERADE --random-fully), as carrier-grade and some
	// office NATs do: where it talks to one peer tells another nothing.
	Symmetric
)

func (k NAT) String() string {
	switch k {
	case Cone:
		return "cone NAT (MASQUERADE)"
	case Symmetric:
		return "symmetric NAT (MASQUERADE --random-fully)"
	}
	return "1:1 NAT"
}

// AddHome adds a home server number idx behind a router with the given NAT
// and no port forwards: public address 203.0.113.<10*idx> on the router,
// private 10.<idx>.1.2 on the server. Nothing can reach it unless it sent
// there first.
func (n *Net) AddHome(name string, idx int, nat NAT) *Server {
	n.t.Helper()
	return n.addBehind(name, idx, true, nat)
}

// natRules installs the router's NAT for its current public address.
func (s *Server) natRules() {
	n, pub, priv := s.net, s.PublicIP.String(), s.PrivateIP.String()
	if s.lan { // the router's LAN (AddNeighbour): every server on it
		priv = fmt.Sprintf("10.%d.1.0/24", s.idx)
	}
	switch s.NAT {
	case OneToOne:
		n.iptables(s.Router, "-t", "nat", "-A", "PREROUTING", "-d", pub, "-j", "DNAT", "--to-destination", priv)
		n.iptables(s.Router, "-t", "nat", "-A", "POSTROUTING", "-s", priv, "-o", "up0", "-j", "SNAT", "--to-source", pub)
	case Cone:
		n.iptables(s.Router, "-t", "nat", "-A", "POSTROUTING", "-s", priv, "-o", "up0", "-j", "MASQUERADE")
	case Symmetric:
		n.iptables(s.Router, "-t", "nat", "-A", "POSTROUTING", "-s", priv, "-o", "up0", "-j", "MASQUERADE", "--random-fully")
	}
	if s.NAT != OneToOne && !s.wanFirewall {
		// A home router's firewall (OpenWrt's default, for one) drops what
		// the internet sends it unasked. It also matters to the NAT: a
		// packet that reached the router itself would leave a conntrack
		// entry that takes the port a later mapping to its sender wants.
		n.iptables(s.Router, "-A", "INPUT", "-i", "up0", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
		s.wanFirewall = true
	}
}

// RunRouter runs a command in the server's router namespace (its NAT and
// firewall) and returns its output, failing the test if it fails.
func (s *Server) RunRouter(name string, args ...string) string {
	s.net.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", s.Router, name}, args...)...).CombinedOutput()
	if err != nil {
		s.net.t.Fatalf("%s's router: %s %s: %v\n%s", s.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
