//go:build linux

package testnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// Listen opens a stream listener inside the server's network namespace
// (closed when the test ends), for a test that needs a service there, such
// as a kubelet's port.
func (s *Server) Listen(network, addr string) net.Listener {
	s.net.t.Helper()
	var l net.Listener
	var err error
	if ierr := inNS(s.NS, func() { l, err = net.Listen(network, addr) }); ierr != nil || err != nil {
		s.net.t.Fatalf("%s: listening on %s %s: %v %v", s.Name, network, addr, ierr, err)
	}
	s.net.onCleanup(func() { l.Close() })
	return l
}

// ListenPacket opens a packet socket inside the server's network
// namespace, closed when the test ends.
func (s *Server) ListenPacket(network, addr string) net.PacketConn {
	s.net.t.Helper()
	c, err := listenIn(s.NS, network, addr)
	if err != nil {
		s.net.t.Fatalf("%s: listening on %s %s: %v", s.Name, network, addr, err)
	}
	s.net.onCleanup(func() { c.Close() })
	return c
}

// AddNamespace creates one more namespace of this network (a pod behind a
// server, say), removed with the rest.
func (n *Net) AddNamespace(suffix string) string {
	n.t.Helper()
	return n.addNS(suffix)
}

// Accept serves l by accepting and closing connections until it is
// closed, and counts them on the returned channel.
func Accept(l net.Listener) <-chan string {
	ch := make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case ch <- fmt.Sprint(c.RemoteAddr()):
			default:
			}
			c.Close()
		}
	}()
	return ch
}

// RunIn runs a command in the namespace ns (network only), with a 30 s
// limit, for namespaces that are not servers (the internet, a pod).
func RunIn(ns, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, out)
	}
	return nil
}

// Dial opens a connection from inside the server's network namespace.
func (s *Server) Dial(network, addr string) (c net.Conn, err error) {
	if ierr := inNS(s.NS, func() { c, err = net.DialTimeout(network, addr, 5*time.Second) }); ierr != nil {
		return nil, ierr
	}
	return c, err
}

// AddPod adds a namespace behind the server that stands for a pod: a veth
// pair with the pod at addr/24 and the server at the .1 of that /24, the
// pod's default route through the server, and flannel's masquerade of
// traffic from the pod network (-s 10.42.0.0/16 ! -d 10.42.0.0/16), so
// that what the pod sends to the mesh leaves with the server's address.
func (s *Server) AddPod(addr netip.Addr) string {
	n := s.net
	n.t.Helper()
	pod := n.addNS(fmt.Sprintf("pod%d", s.idx))
	gw := netip.AddrFrom4([4]byte{addr.As4()[0], addr.As4()[1], addr.As4()[2], 1})
	n.ip(s.NS, "link", "add", "vpod", "type", "veth", "peer", "name", "eth0", "netns", pod)
	n.ip(s.NS, "addr", "add", gw.String()+"/24", "dev", "vpod")
	n.ip(s.NS, "link", "set", "vpod", "up")
	n.ip(pod, "addr", "add", addr.String()+"/24", "dev", "eth0")
	n.ip(pod, "link", "set", "eth0", "up")
	n.ip(pod, "route", "add", "default", "via", gw.String())
	n.iptables(s.NS, "-t", "nat", "-A", "POSTROUTING", "-s", "10.42.0.0/16", "!", "-d", "10.42.0.0/16", "-j", "MASQUERADE")
	return pod
}

// RunInOutput is RunIn that returns the command's output, whatever its
// exit status.
func RunInOutput(ns, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	return string(out), err
}
