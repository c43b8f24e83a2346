//go:build linux

package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/net/dns/dnsmessage"
)

// DNSAddr is where the simulated internet's DNS server answers; every
// server's resolv.conf points at it.
const DNSAddr = "203.0.113.1:53"

// DNS is a small authoritative DNS server in the internet namespace that
// answers A queries from a table the test changes (a provider giving a
// server a new public IP, and the operator updating its record).
type DNS struct {
	mu      sync.Mutex
	records map[string]netip.Addr
	conn    net.PacketConn
}

// StartDNS starts the server on DNSAddr. It stops when the test ends.
func (n *Net) StartDNS() *DNS {
	n.t.Helper()
	conn, err := listenIn(n.Internet, "udp4", DNSAddr)
	if err != nil {
		n.t.Fatalf("starting DNS in %s: %v", n.Internet, err)
	}
	d := &DNS{records: map[string]netip.Addr{}, conn: conn}
	n.onCleanup(func() { conn.Close() })
	go d.serve()
	return d
}

// Set points name at ip (ttl 1 s).
func (d *DNS) Set(name string, ip netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[canonical(name)] = ip
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) + "." }

func (d *DNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, err := d.answer(buf[:n]); err == nil {
			d.conn.WriteTo(resp, from)
		}
	}
}

func (d *DNS) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	ip, known := d.records[canonical(q.Name.String())]
	d.mu.Unlock()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		hdr := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 1}
		if err := b.AResource(hdr, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// listenIn opens a packet socket inside the named network namespace.
func listenIn(ns, network, addr string) (c net.PacketConn, err error) {
	if ierr := inNS(ns, func() { c, err = net.ListenPacket(network, addr) }); ierr != nil {
		return nil, ierr
	}
	return c, err
}

// inNS runs f on a thread inside the named network namespace; a socket f
// opens belongs to that namespace whatever thread uses it later. The
// thread switches in and back; if it cannot switch back it stays locked
// and the runtime retires it with its goroutine (or, if it is the main
// thread, parks it, which is why killNS never kills this process).
func inNS(ns string, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}

// Delete removes name's record: it no longer resolves.
func (d *DNS) Delete(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.records, canonical(name))
}
