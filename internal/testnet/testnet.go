//go:build linux

// Package testnet builds a small simulated internet out of Linux network
// namespaces for the appliance's integration tests:
//
//	[ns internet: bridge br0, 203.0.113.0/24 "public" addresses]
//	    |                     |
//	[ns router: 1:1 NAT]  [ns router: 1:1 NAT]      one per cloud
//	    |                     |
//	[ns server 10.1.1.2]  [ns server 10.2.1.2]      eth0 private, default route to its router
//
// Each server also gets its own mount namespace (held by a sleeping holder
// process) with a tmpfs on /run/wireguard, so that two userspace wg0
// devices on one machine do not share a UAPI socket, and a file
// /etc/netns/<ns>/resolv.conf can give it its own DNS server.
//
// Everything is created by the test and removed by t.Cleanup; namespace
// names carry the test process's pid, so leftovers of a killed run are swept
// by the next one. Nothing touches the root namespace's routes, addresses,
// iptables rules or sysctls.
package testnet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts every namespace name this package creates.
const Prefix = "wgk3s-t"

// T is what the package needs of a test: *testing.T satisfies it, and so
// does the demo's narrator.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// Requirements skips t unless it runs as root with the tools it needs.
func Requirements(t T, tools ...string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs as root)")
	}
	for _, tool := range append([]string{"ip", "iptables", "nsenter", "unshare", "ping"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s on PATH (run `make deps`)", tool)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
}

// Net is one simulated internet.
type Net struct {
	t        T
	id       string
	Internet string // the internet namespace
	mu       sync.Mutex
	servers  []*Server
	cleanups []func()
}

// Server is one cloud server behind its provider's 1:1 NAT router.
type Server struct {
	net       *Net
	Name      string
	NS        string // the server's namespace
	Router    string // its router's namespace
	PublicIP  netip.Addr
	PrivateIP netip.Addr
	// NAT is how its router maps it to the public address.
	NAT         NAT
	wanFirewall bool // its router drops what the internet sends unasked (once)
	lan         bool // its router's LAN side is a bridge (AddNeighbour)
	idx         int
	holder      *exec.Cmd
	// A machine (AddMachine): its directory, cgroups and init.
	machine bool
	dir     string
	cgroups []string
	init    int
}

// New creates the internet namespace. Everything is removed when t ends.
func New(t T) *Net {
	t.Helper()
	Requirements(t)
	Sweep()
	b := make([]byte, 3)
	rand.Read(b)
	n := &Net{t: t, id: fmt.Sprintf("%s%d-%s", Prefix, os.Getpid(), hex.EncodeToString(b))}
	t.Cleanup(n.cleanup)
	n.Internet = n.addNS("inet")
	n.ip(n.Internet, "link", "add", "br0", "type", "bridge")
	n.ip(n.Internet, "addr", "add", "203.0.113.1/24", "dev", "br0")
	n.ip(n.Internet, "link", "set", "br0", "up")
	return n
}

func (n *Net) addNS(suffix string) string {
	name := n.id + "-" + suffix
	n.must("ip", "netns", "add", name)
	n.onCleanup(func() {
		killNS(name)
		exec.Command("ip", "netns", "del", name).Run()
		os.RemoveAll("/etc/netns/" + name)
	})
	n.ip(name, "link", "set", "lo", "up")
	return name
}

func (n *Net) onCleanup(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cleanups = append(n.cleanups, f)
}

func (n *Net) cleanup() {
	n.mu.Lock()
	fs := n.cleanups
	n.cleanups = nil
	n.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// AddServer adds cloud number idx (1-based): router namespace with public
// address 203.0.113.<10*idx> and server namespace with private 10.<idx>.1.2.
func (n *Net) AddServer(name string, idx int) *Server {
	n.t.Helper()
	return n.addServer(name, idx, true)
}

func (n *Net) addServer(name string, idx int, holder bool) *Server {
	n.t.Helper()
	return n.addBehind(name, idx, holder, OneToOne)
}

func (n *Net) addBehind(name string, idx int, holder bool, nat NAT) *Server {
	n.t.Helper()
	s := &Server{net: n, Name: name, idx: idx, NAT: nat,
		PublicIP:  netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", 10*idx)),
		PrivateIP: netip.MustParseAddr(fmt.Sprintf("10.%d.1.2", idx)),
	}
	s.Router = n.addNS(fmt.Sprintf("r%d", idx))
	s.NS = n.addNS(fmt.Sprintf("s%d", idx))
	// Uplink: router up0 <-> internet bridge port.
	port := fmt.Sprintf("p%d", idx)
	n.ip(s.Router, "link", "add", "up0", "type", "veth", "peer", "name", port, "netns", n.Internet)
	n.ip(n.Internet, "link", "set", port, "master", "br0", "up")
	n.ip(s.Router, "addr", "add", s.PublicIP.String()+"/24", "dev", "up0")
	n.ip(s.Router, "link", "set", "up0", "up")
	// Downlink: router in0 <-> server eth0.
	gw := fmt.Sprintf("10.%d.1.1", idx)
	n.ip(s.Router, "link", "add", "in0", "type", "veth", "peer", "name", "eth0", "netns", s.NS)
	n.ip(s.Router, "addr", "add", gw+"/24", "dev", "in0")
	n.ip(s.Router, "link", "set", "in0", "up")
	n.ip(s.NS, "addr", "add", s.PrivateIP.String()+"/24", "dev", "eth0")
	n.ip(s.NS, "link", "set", "eth0", "up")
	n.ip(s.NS, "route", "add", "default", "via", gw)
	n.must("ip", "netns", "exec", s.Router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	s.natRules()
	// `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over
	// /etc/resolv.conf; it must exist before the holder starts. The default
	// points at the internet namespace, where a test may run a DNS server.
	if err := os.MkdirAll("/etc/netns/"+s.NS, 0o755); err != nil {
		n.t.Fatal(err)
	}
	s.SetResolvConf("nameserver 203.0.113.1\noptions timeout:1 attempts:1\n")
	if holder {
		s.startHolder()
	}
	n.mu.Lock()
	n.servers = append(n.servers, s)
	n.mu.Unlock()
	return s
}

// startHolder starts the process whose mount namespace the server's
// processes share: a private tmpfs on /run/wireguard (and /run/wgk3s).
func (s *Server) startHolder() {
	t := s.net.t
	script := "mkdir -p /run/wireguard /run/wgk3s && mount -t tmpfs -o mode=0755 tmpfs /run/wireguard && " +
		"mount -t tmpfs -o mode=0755 tmpfs /run/wgk3s && echo ready && exec sleep 3600"
	cmd := exec.Command("ip", "netns", "exec", s.NS, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	s.holder = startReady(t, cmd, "the holder of "+s.NS, 10*time.Second)
	s.net.onCleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// startReady starts cmd and waits, at most within, for the line "ready"
// it prints when it is set up.
func startReady(t T, cmd *exec.Cmd, what string, within time.Duration) *exec.Cmd {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", what, err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Process.Kill()
			t.Fatalf("%s did not start", what)
		}
	case <-time.After(within):
		cmd.Process.Kill()
		t.Fatalf("%s did not start within %s", what, within)
	}
	return cmd
}

// Command returns a command that runs inside the server: its network
// namespace and its mount namespace.
func (s *Server) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if s.machine {
		// Join the machine's cgroups first (the cgroup namespace would hide
		// them), then all its namespaces; nsenter forks into the pid
		// namespace, so the command is nsenter's child.
		var script strings.Builder
		for _, dir := range s.cgroups {
			fmt.Fprintf(&script, "echo $$ > %s/cgroup.procs; ", dir)
		}
		fmt.Fprintf(&script, `exec nsenter -t %d -a -- "$@"`, s.init)
		return exec.CommandContext(ctx, "sh", append([]string{"-c", script.String(), "sh", name}, args...)...)
	}
	all := append([]string{"-t", strconv.Itoa(s.holder.Process.Pid), "-m", "-n", "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", all...)
}

// Run runs a command in the server and returns its combined output, failing
// the test if it fails. It gives up after 30 s.
func (s *Server) Run(name string, args ...string) string {
	s.net.t.Helper()
	out, err := s.Try(name, args...)
	if err != nil {
		s.net.t.Fatalf("%s: %s %s: %v\n%s", s.Name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// Try is Run without failing the test.
func (s *Server) Try(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.Command(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// Ping sends count pings to dst from the server and returns how many were
// answered. dst may start with ping options ("-I 192.168.2.1 10.1.1.1").
// interval is ping's -i (at least 0.002 s as root).
func (s *Server) Ping(dst string, count int, interval time.Duration) (int, string) {
	args := []string{"-n", "-q", "-c", strconv.Itoa(count), "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1"}
	out, _ := s.Try("ping", append(args, strings.Fields(dst)...)...)
	return Received(out), out
}

// Received reads how many replies a ping summary reports.
func Received(out string) int {
	// "5 packets transmitted, 5 received, 0% packet loss, time 4005ms"
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, " received"); i > 0 && strings.Contains(line, "transmitted") {
			// iputils: "5 received"; busybox: "5 packets received".
			fields := strings.Fields(strings.TrimSuffix(line[:i], " packets"))
			n, _ := strconv.Atoi(fields[len(fields)-1])
			return n
		}
	}
	return 0
}

// SetUplink takes the server's router off the internet (down) or back.
func (s *Server) SetUplink(up bool) {
	state := "down"
	if up {
		state = "up"
	}
	s.net.ip(s.Router, "link", "set", "up0", state)
}

// SetBridgePortMTU sets the MTU of the internet bridge's port towards
// the server's router: a network in between with a smaller MTU, which
// drops bigger frames and sends no ICMP (a bridge cannot).
func (s *Server) SetBridgePortMTU(mtu int) {
	s.net.ip(s.net.Internet, "link", "set", fmt.Sprintf("p%d", s.idx), "mtu", strconv.Itoa(mtu))
}

// KernelWireGuardMissing says why this kernel cannot run kernel WireGuard,
// or "" if it can. It creates a WireGuard link in a scratch namespace,
// exactly what the appliance's auto mode does.
func KernelWireGuardMissing() string {
	ns := fmt.Sprintf("%sprobe-%d", Prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "wgprobe", "type", "wireguard").CombinedOutput(); err != nil {
		return "this kernel cannot create a WireGuard link: " + strings.TrimSpace(string(out))
	}
	return ""
}

// Sweep removes namespaces left by test processes that no longer exist
// (a run killed by a timeout cannot run its cleanups).
func Sweep() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, Prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its test is still running
		}
		killNS(name)
		exec.Command("ip", "netns", "del", name).Run()
		os.RemoveAll("/etc/netns/" + name)
	}
	sweepMachines()
}

// killNS kills every process still inside namespace name, except this one:
// a thread of ours may have visited it (listenIn).
func killNS(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (n *Net) ip(ns string, args ...string) {
	n.t.Helper()
	n.must("ip", append([]string{"-n", ns}, args...)...)
}

func (n *Net) iptables(ns string, args ...string) {
	n.t.Helper()
	n.must("ip", append([]string{"netns", "exec", ns, "iptables", "-w"}, args...)...)
}

func (n *Net) must(name string, args ...string) {
	n.t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		n.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
}

// WriteFile writes a file as seen inside the server's mount namespace (for
// paths under /run/wgk3s and /run/wireguard, the server's own tmpfs).
func (s *Server) WriteFile(path string, data []byte, mode os.FileMode) {
	s.net.t.Helper()
	full := s.HostPath(path)
	if err := os.WriteFile(full, data, mode); err != nil {
		s.net.t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil {
		s.net.t.Fatal(err)
	}
}

// HostPath is path inside the server as the test process can reach it.
func (s *Server) HostPath(path string) string {
	if s.machine {
		return fmt.Sprintf("/proc/%d/root%s", s.init, path)
	}
	return fmt.Sprintf("/proc/%d/root%s", s.holder.Process.Pid, path)
}

// SetResolvConf replaces the server's /etc/resolv.conf contents. The file is
// rewritten in place: it is bind-mounted, so it must keep its inode.
func (s *Server) SetResolvConf(contents string) {
	s.net.t.Helper()
	f, err := os.OpenFile("/etc/netns/"+s.NS+"/resolv.conf", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		s.net.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(contents); err != nil {
		s.net.t.Fatal(err)
	}
}

// SetPublicIP gives the server's router a new public address, as a provider
// does when an instance is stopped and started (or a home ISP at will): the
// old address is gone, the NAT uses the new one, and the router's NAT
// state is flushed.
func (s *Server) SetPublicIP(ip netip.Addr) {
	n := s.net
	n.t.Helper()
	n.ip(s.Router, "addr", "del", s.PublicIP.String()+"/24", "dev", "up0")
	n.ip(s.Router, "addr", "add", ip.String()+"/24", "dev", "up0")
	n.iptables(s.Router, "-t", "nat", "-F")
	s.PublicIP = ip
	s.natRules()
	h, err := netns.GetFromName(s.Router)
	if err != nil {
		n.t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		n.t.Fatal(err)
	}
	defer nl.Close()
	if err := nl.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		n.t.Fatalf("flushing conntrack in %s: %v", s.Router, err)
	}
}

// Close removes everything now instead of when the test ends (the test's
// cleanup then finds nothing left to do).
func (n *Net) Close() { n.cleanup() }

// Leftovers lists the namespaces, and machines' cgroups and directories,
// of this Net that still exist.
func (n *Net) Leftovers() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(name, n.id) {
			left = append(left, name)
		}
	}
	for _, parent := range append(cgroupParents(), os.TempDir()) {
		m, _ := filepath.Glob(filepath.Join(parent, n.id+"*"))
		left = append(left, m...)
	}
	return left
}
