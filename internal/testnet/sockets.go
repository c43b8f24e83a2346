//go:build linux

package testnet

import (
	"context"
	"fmt"
	"net"
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
