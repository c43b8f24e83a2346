//go:build linux

package testnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// AddNeighbour adds a server on s's LAN, behind s's router: two servers in
// one house, whose router maps both (with s's NAT) and, like most home
// routers, does not hairpin (a packet to its own public address from the
// LAN is not sent back in). The new server's eth0 is 10.<idx>.1.<host>/24.
func (s *Server) AddNeighbour(name string, host int) *Server {
	n := s.net
	n.t.Helper()
	s.lanBridge()
	nb := &Server{net: n, Name: name, idx: s.idx, NAT: s.NAT, wanFirewall: true, Router: s.Router, PublicIP: s.PublicIP,
		PrivateIP: netip.MustParseAddr(fmt.Sprintf("10.%d.1.%d", s.idx, host))}
	nb.NS = n.addNS(fmt.Sprintf("s%d-%d", s.idx, host))
	port := fmt.Sprintf("in%d", host)
	n.ip(s.Router, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", nb.NS)
	n.ip(s.Router, "link", "set", port, "master", "lan0", "up")
	n.ip(nb.NS, "addr", "add", nb.PrivateIP.String()+"/24", "dev", "eth0")
	n.ip(nb.NS, "link", "set", "eth0", "up")
	n.ip(nb.NS, "route", "add", "default", "via", fmt.Sprintf("10.%d.1.1", s.idx))
	if err := os.MkdirAll("/etc/netns/"+nb.NS, 0o755); err != nil {
		n.t.Fatal(err)
	}
	nb.SetResolvConf("nameserver 203.0.113.1\noptions timeout:1 attempts:1\n")
	nb.startHolder()
	n.mu.Lock()
	n.servers = append(n.servers, nb)
	n.mu.Unlock()
	return nb
}

// lanBridge turns the router's LAN side into a bridge (lan0, with the
// gateway address) that in0 and the neighbours' ports are on.
func (s *Server) lanBridge() {
	if s.lan {
		return
	}
	n, gw := s.net, fmt.Sprintf("10.%d.1.1/24", s.idx)
	n.ip(s.Router, "addr", "del", gw, "dev", "in0")
	n.ip(s.Router, "link", "add", "lan0", "type", "bridge")
	n.ip(s.Router, "link", "set", "in0", "master", "lan0")
	n.ip(s.Router, "addr", "add", gw, "dev", "lan0")
	n.ip(s.Router, "link", "set", "lan0", "up")
	s.lan = true
	n.iptables(s.Router, "-t", "nat", "-F") // the NAT now maps the whole LAN
	s.natRules()
}

// Destroy loses the server for good, as a reclaimed or deleted cloud
// instance is lost: every process in it is killed, its namespaces (and
// its router's, unless neighbours share it) are deleted, and its private
// files (its /run, where the tests keep its keys and cluster file) go
// with its holder. Nothing of it answers again.
func (s *Server) Destroy() {
	n := s.net
	if s.machine && s.init > 0 {
		syscall.Kill(s.init, syscall.SIGKILL) // its pid namespace, every process in it, ends
		for _, dir := range s.cgroups {
			Eventually(20*time.Second, func() bool {
				b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				return len(strings.TrimSpace(string(b))) == 0
			})
		}
		s.init = 0
	}
	killNS(s.NS)
	if s.holder != nil && s.holder.Process != nil {
		s.holder.Process.Kill()
		s.holder.Wait()
		s.holder = nil
	}
	exec.Command("ip", "netns", "del", s.NS).Run()
	if !s.lan {
		killNS(s.Router)
		exec.Command("ip", "netns", "del", s.Router).Run()
		// The kernel frees a namespace (and the uplink's end on the
		// internet bridge) after the last reference goes, a moment later.
		port := fmt.Sprintf("p%d", s.idx)
		Eventually(10*time.Second, func() bool {
			return exec.Command("ip", "-n", n.Internet, "link", "show", port).Run() != nil
		})
	}
	if s.machine {
		os.RemoveAll(s.dir) // its disks: /var/lib/rancher, the kubelet's, ...
	}
	n.mu.Lock()
	n.servers = slices.DeleteFunc(n.servers, func(o *Server) bool { return o == s })
	n.mu.Unlock()
}
