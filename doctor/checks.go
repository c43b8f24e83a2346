package doctor

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// window is how recent a datagram from a peer must be to count: two
// keepalives and 5 s (180 s without keepalives).
func (f *Facts) window() time.Duration {
	if f.Keepalive == 0 {
		return 180 * time.Second
	}
	return 2*f.Keepalive + 5*time.Second
}

// sessionLife is how long a WireGuard session lasts without a new
// handshake (REJECT_AFTER_TIME).
const sessionLife = 180 * time.Second

// alive says whether the tunnel to p carries packets both ways now: an
// echo through wg0 came back (the MTU probe, at any size); without
// probes, a handshake within a session's life.
func (f *Facts) alive(p Peer) bool {
	if f.MTUProbe != nil {
		return f.MTUProbe[p.Name] > 0
	}
	return !p.Handshake.IsZero() && f.Now.Sub(p.Handshake) < sessionLife
}

// viewAlive judges a peer in the master's view (no probes there): a
// handshake within a session's life and its packets counted lately.
func (f *Facts) viewAlive(p Peer) bool {
	return !p.Handshake.IsZero() && f.Now.Sub(p.Handshake) < sessionLife && f.authentic(p)
}

func (f *Facts) heard(p Peer) bool {
	return !p.HeardFromAddr.IsZero() && f.Now.Sub(p.HeardFromAddr) < f.window()
}

func (f *Facts) authentic(p Peer) bool {
	return !p.Authentic.IsZero() && f.Now.Sub(p.Authentic) < f.window()
}

// udpChecks tells a peer that is down from one whose UDP is dropped on the
// way: a peer whose handshakes arrive here but that never completes one
// does not get the answers (its inbound UDP is dropped); nothing back
// from any peer is this node's inbound; a peer silent here is asked
// about in the master's view.
func udpChecks(f *Facts) []Finding {
	if len(f.FirewallDrops) > 0 {
		return nil // this host's own rules drop the mesh: the firewall check names them
	}
	var silent, oneWay []Peer
	reachable := 0
	for _, p := range f.Peers {
		switch {
		case f.alive(p):
			reachable++
		case f.authentic(p):
			oneWay = append(oneWay, p)
		case !f.heard(p): // datagrams that do not authenticate are the key check's
			silent = append(silent, p)
		}
	}
	var out []Finding
	for _, p := range oneWay {
		out = append(out, Finding{Node: p.Name,
			Problem:  fmt.Sprintf("%s's handshakes arrive here but it never gets the answers: UDP to %s's port %d is dropped on its way in", p.Name, p.Name, f.ListenPort),
			Evidence: fmt.Sprintf("WireGuard took packets from %s %s (from %s) and answers them, but no echo through wg0 comes back from it (its last handshake: %s)", p.Name, ago(f.Now, p.Authentic), p.Addr, ago(f.Now, p.Handshake)),
			Fix:      fmt.Sprintf("open UDP %d inbound in %s's provider security group (from the other nodes' public addresses, or 0.0.0.0/0), and check the firewall in front of it", f.ListenPort, p.Name)})
	}
	if len(silent) == 0 {
		return out
	}
	if reachable == 0 && len(oneWay) == 0 && len(silent) == len(f.Peers) {
		return []Finding{{Node: f.Node, Problem: fmt.Sprintf("nothing comes back from any of its %d peers: UDP to this node's port %d is dropped before WireGuard sees it", len(f.Peers), f.ListenPort),
			Evidence: fmt.Sprintf("no echo through wg0 came back from any peer and no datagram arrived from any within %s; this node sent %s to them", f.window(), bytesOf(silent)),
			Fix:      fmt.Sprintf("open UDP %d inbound in %s's provider security group (or the firewall in front of it), from the other nodes' public addresses or 0.0.0.0/0", f.ListenPort, f.Node)}}
	}
	for _, p := range silent {
		out = append(out, f.silentPeer(p))
	}
	return out
}

// silentPeer explains one peer nothing comes from, with the master's view.
func (f *Facts) silentPeer(p Peer) Finding {
	fd := Finding{Node: p.Name, Evidence: fmt.Sprintf("no echo through wg0 comes back and nothing arrived from it within %s (the last handshake: %s); sent %d bytes to %s, received %d", f.window(), ago(f.Now, p.Handshake), p.TX, p.Addr, p.RX)}
	var mv *Peer
	if f.MasterView != nil {
		for i := range f.MasterView.Peers {
			if f.MasterView.Peers[i].Name == p.Name {
				mv = &f.MasterView.Peers[i]
			}
		}
	}
	switch {
	case mv != nil && f.viewAlive(*mv):
		fd.Problem = fmt.Sprintf("%s answers the master (%s) but nothing comes back from it to %s: UDP between them is dropped on the way", p.Name, f.Master, f.Node)
		fd.Evidence += fmt.Sprintf("; the master's last handshake with it: %s", ago(f.Now, mv.Handshake))
		fd.Fix = fmt.Sprintf("open UDP %d inbound in %s's security group to %s's public address too (not only the master's), and check %s's outbound rules", f.ListenPort, p.Name, f.Node, f.Node)
	case mv != nil && f.heard(*mv) && !f.authentic(*mv):
		fd.Check = "key"
		fd.Problem = fmt.Sprintf("datagrams from %s reach the master (%s) but do not authenticate: its WireGuard key is not the one the cluster file names for it", p.Name, f.Master)
		fd.Evidence += fmt.Sprintf("; the master gets datagrams from %s at %s (the latest %s) and counts none of them", p.Name, mv.HeardAt, ago(f.Now, mv.HeardFromAddr))
		fd.Fix = fmt.Sprintf("on %s run `appliance pubkey < /etc/wgk3s/private.key` and put that key in its entry in the master's cluster file (or put its old key file back)", p.Name)
	case mv != nil && (f.authentic(*mv) || f.heard(*mv)):
		fd.Problem = fmt.Sprintf("%s sends handshakes (the master hears them) but never gets the answers: UDP to %s's port %d is dropped on its way in", p.Name, p.Name, f.ListenPort)
		fd.Evidence += fmt.Sprintf("; the master hears %s at %s (the latest %s) and has no session with it", p.Name, mv.Addr, ago(f.Now, mv.HeardFromAddr))
		fd.Fix = fmt.Sprintf("open UDP %d inbound in %s's provider security group (from the other nodes' public addresses, or 0.0.0.0/0)", f.ListenPort, p.Name)
	case mv != nil:
		fd.Problem = fmt.Sprintf("%s is down, or cut off: nothing comes from it here nor at the master", p.Name)
		fd.Evidence += "; the master has heard nothing from it either"
		fd.Fix = fmt.Sprintf("check that %s runs (systemctl status wgk3s there) and that its network is up", p.Name)
	default:
		fd.Problem = fmt.Sprintf("nothing comes from %s: it is down, or UDP to or from it is dropped", p.Name)
		fd.Fix = fmt.Sprintf("run appliance doctor on %s; check that it runs and that UDP %d is open inbound on both", p.Name, f.ListenPort)
	}
	return fd
}

func bytesOf(ps []Peer) string {
	var n int64
	for _, p := range ps {
		n += p.TX
	}
	return fmt.Sprintf("%d bytes", n)
}

// keyChecks finds a peer whose datagrams arrive but never authenticate:
// its key is not the one the file names (or this node's is not the one
// its file names).
func keyChecks(f *Facts) []Finding {
	var out []Finding
	for _, p := range f.Peers {
		if f.alive(p) || f.authentic(p) || !f.heard(p) {
			continue
		}
		out = append(out, Finding{Node: p.Name,
			Problem:  fmt.Sprintf("datagrams come from %s's address but do not authenticate: its WireGuard key is not the one the cluster file names for it", p.Name),
			Evidence: fmt.Sprintf("the latest datagram from %s %s; none of them counted by WireGuard within %s, and no echo through wg0 comes back (the last handshake: %s)", p.HeardAt, ago(f.Now, p.HeardFromAddr), f.window(), ago(f.Now, p.Handshake)),
			Fix:      fmt.Sprintf("on %s run `appliance pubkey < /etc/wgk3s/private.key` and put that key in its entry in the master's cluster file (or put its old key file back)", p.Name)})
	}
	return out
}

// mtuChecks: a path that carries less than full-size tunnel packets.
func mtuChecks(f *Facts) []Finding {
	var out []Finding
	for _, name := range slices.Sorted(maps.Keys(f.MTUProbe)) {
		got := f.MTUProbe[name]
		if got == 0 || got >= f.MTU {
			continue
		}
		out = append(out, Finding{Node: name,
			Problem: fmt.Sprintf("the path between %s and %s carries tunnel packets of at most %d bytes, less than interface.mtu %d: bigger ones vanish (pings work, big transfers stall)", f.Node, name, got, f.MTU),
			Evidence: fmt.Sprintf("echoes through wg0 with don't-fragment: %d bytes came back, %d did not, twice each (%d bytes with WireGuard's headers over IPv4: a network in between has a smaller MTU and sends no ICMP)",
				got, f.MTU, f.MTU+60),
			Fix: fmt.Sprintf("set interface.mtu: %d in the master's cluster file and reload it (systemctl reload wgk3s): every node takes it live", got)})
	}
	return out
}

func dnsChecks(f *Facts) []Finding {
	var out []Finding
	for name, why := range f.Unresolved {
		owner := name
		for _, p := range f.Peers {
			if strings.HasPrefix(p.Endpoint, name+":") {
				owner = p.Name
			}
		}
		out = append(out, Finding{Node: owner, Problem: fmt.Sprintf("the endpoint name %s does not resolve", name),
			Evidence: why, Fix: fmt.Sprintf("fix %s's DNS record, or write %s's public IP in its endpoint in the master's file", name, owner)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// clockSkew is how far off the master's clock a node may be before it is
// said (the sync refuses at 90 s).
const clockSkew = 30 * time.Second

func clockChecks(f *Facts) []Finding {
	if !f.HasClock || f.ClockOffset < clockSkew && f.ClockOffset > -clockSkew {
		return nil
	}
	side := "behind"
	if f.ClockOffset < 0 {
		side = "ahead of"
	}
	off := f.ClockOffset.Abs().Round(time.Second)
	return []Finding{{Node: f.Node, Problem: fmt.Sprintf("this node's clock is %s %s the master's (the sync refuses at 90 s)", off, side),
		Evidence: fmt.Sprintf("the master's authenticated answers carry its time: the offset is %s", f.ClockOffset.Round(time.Second)),
		Fix:      "run chronyd or ntpd on every node (timedatectl set-ntp true)"}}
}

func firewallChecks(f *Facts) []Finding {
	var out []Finding
	if len(f.FirewallDrops) > 0 {
		out = append(out, Finding{Node: f.Node, Problem: fmt.Sprintf("this host's firewall drops WireGuard's port %d (or wg0's traffic) before the appliance's rules", f.ListenPort),
			Evidence: strings.Join(f.FirewallDrops, "; "),
			Fix:      "remove those rules (or accept udp/" + fmt.Sprint(f.ListenPort) + " before them); the appliance's own rules accept what the cluster needs"})
	}
	if f.RPFilter == 1 && f.RPFilterDrops > 0 {
		out = append(out, Finding{Node: f.Node, Problem: "strict reverse-path filtering drops packets that arrive on an interface other than the route back (wg0's, the pods')",
			Evidence: fmt.Sprintf("rp_filter is 1 (strict) for %s, and the kernel counted %d packets it dropped so (IPReversePathFilter in /proc/net/netstat)", f.Interface, f.RPFilterDrops),
			Fix:      fmt.Sprintf("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.%s.rp_filter=2 (loose), and the same in /etc/sysctl.d/", f.Interface)})
	}
	return out
}

// certRenewal is how long before expiry k3s renews its certificates at a
// start.
const certRenewal = 120 * 24 * time.Hour

func certChecks(f *Facts) []Finding {
	var out []Finding
	for _, file := range slices.Sorted(maps.Keys(f.Certs)) {
		exp := f.Certs[file]
		left := exp.Sub(f.Now)
		if left > certRenewal {
			continue
		}
		problem := fmt.Sprintf("k3s's certificate %s expires on %s (in %d days)", file, exp.UTC().Format("2006-01-02"), int(left.Hours()/24))
		if left <= 0 {
			problem = fmt.Sprintf("k3s's certificate %s expired on %s", file, exp.UTC().Format("2006-01-02"))
		}
		out = append(out, Finding{Node: f.Node, Problem: problem,
			Evidence: "k3s renews its certificates only at a start, and only those within 120 days of expiry (k3s-io/k3s#10865, #12312)",
			Fix:      "restart k3s before then: systemctl restart wgk3s (its k3s renews them at that start)"})
	}
	return out
}

func natChecks(f *Facts) []Finding {
	if f.HasEndpoint || len(f.Mappings) < 2 {
		return nil
	}
	var ports []string
	seen := map[uint16]bool{}
	keeps := true
	for relay, m := range f.Mappings {
		ports = append(ports, fmt.Sprintf("%s sees %s", relay, m))
		seen[m.Port()] = true
		keeps = keeps && int(m.Port()) == f.ListenPort
	}
	sort.Strings(ports)
	fd := Finding{Node: f.Node, Note: true, Evidence: strings.Join(ports, "; ")}
	switch {
	case len(seen) > 1:
		fd.Problem = "this node is behind a symmetric NAT: a new port for each destination"
		fd.Fix = "nothing to do: it reaches nodes with an endpoint directly and other nodes behind NAT through a relay; a port forward of UDP " + fmt.Sprint(f.ListenPort) + " on its router (and an endpoint in the file) makes it direct to everyone"
	case keeps:
		fd.Problem = "this node is behind a NAT that keeps its port for every destination"
		fd.Fix = "nothing to do: other nodes behind such NATs reach it directly"
	default:
		fd.Problem = "this node is behind a NAT that keeps one mapping (another port) for every destination"
		fd.Fix = "nothing to do: other nodes reach it directly at the mapping the master sees"
	}
	return []Finding{fd}
}

func k3sChecks(f *Facts) []Finding {
	if f.K3sReady == nil || *f.K3sReady {
		return nil
	}
	var errs []string
	for _, l := range f.K3sLog {
		low := strings.ToLower(l)
		if strings.Contains(low, "level=error") || strings.Contains(low, "level=fatal") || strings.HasPrefix(strings.TrimSpace(l), "E") && strings.Contains(l, "]") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) > 3 {
		errs = errs[len(errs)-3:]
	}
	ev := "its last log lines show no error"
	if len(errs) > 0 {
		ev = "its last errors: " + strings.Join(errs, " | ")
	}
	return []Finding{{Node: f.Node, Problem: "k3s on this node is not Ready", Evidence: ev,
		Fix: "read the errors above (journalctl -u wgk3s shows all of k3s's output); appliance status shows whether k3s runs and restarts"}}
}
