// Package doctor explains why a node does not connect, when the appliance
// cannot fix it itself: a provider's security group that drops WireGuard's
// port, a path MTU below the tunnel's, a peer whose key is not the file's,
// an endpoint name that does not resolve, a clock far off, a host firewall
// or rp_filter that drops the mesh, a k3s certificate about to expire, the
// NAT a node without an endpoint is behind, a k3s that is not Ready. Each
// finding names the node, what is wrong, the evidence, and the fix, with
// numbers where there are some.
//
// The checks read what the running appliance knows (Facts): its peers as
// WireGuard sees them, what came from each peer's address, the probes'
// answers, the master's view of the same peers, the host's firewall and
// files. They are pure functions of Facts, so each is tested with made-up
// facts; the appliance gathers them (appliance/doctor.go).
package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// ErrNoReply is an echo request that got no reply in time.
var ErrNoReply = errors.New("no reply")

// Finding is one thing wrong.
type Finding struct {
	// Node is the node the fix is for.
	Node string `json:"node"`
	// Check names the check (udp, mtu, key, dns, clock, firewall, cert,
	// nat, k3s).
	Check    string `json:"check"`
	Problem  string `json:"problem"`
	Evidence string `json:"evidence"`
	Fix      string `json:"fix"`
	// Note marks what is worth knowing but not broken (the NAT type):
	// it does not make doctor fail.
	Note bool `json:"note,omitempty"`
}

// Report is what doctor found.
type Report struct {
	Node     string    `json:"node"`
	Taken    time.Time `json:"taken"`
	Findings []Finding `json:"findings"`
	// Checked lists the checks that ran.
	Checked []string `json:"checked"`
}

// Healthy says whether no finding is more than a note.
func (r Report) Healthy() bool {
	for _, f := range r.Findings {
		if !f.Note {
			return false
		}
	}
	return true
}

// Problems counts the findings that are more than notes.
func (r Report) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if !f.Note {
			n++
		}
	}
	return n
}

// Peer is one peer as this node sees it.
type Peer struct {
	Name string
	// Endpoint is the file's ("host:port", a DNS name or an address);
	// empty for a node without one. Addr is where WireGuard sends now.
	Endpoint string
	Addr     netip.AddrPort
	// Handshake is WireGuard's last handshake with it (zero: none).
	Handshake time.Time
	RX, TX    int64
	// Authentic is when WireGuard last counted bytes from it (its
	// handshake messages count, before any session exists).
	Authentic time.Time
	// HeardFromAddr is when a datagram last came from Addr, authentic or
	// not (the userspace data path sees them; zero in kernel mode).
	HeardFromAddr time.Time
	// HeardAt is the address HeardFromAddr is about: Addr, or the file's
	// endpoint while the peer is relayed.
	HeardAt netip.AddrPort
	Relayed bool
	Via     string
	Address string // its wg address
}

// View is a node's view of its peers (the master's, asked over the sync).
type View struct {
	Node  string
	Peers []Peer
}

// Facts are what the checks look at.
type Facts struct {
	Now  time.Time
	Node string
	Role string
	// Master is the master's name; MasterView its view (nil when this is
	// the master, or it did not answer).
	Master     string
	MasterView *View
	Peers      []Peer
	Keepalive  time.Duration
	ListenPort int
	Interface  string
	MTU        int
	// MTUProbe is, per peer, the largest packet (IP header and all) that
	// crossed wg0 with don't-fragment set, of those tried (0: none did).
	MTUProbe map[string]int
	// Unresolved are the endpoint names that did not resolve, with why.
	Unresolved map[string]string
	// ClockOffset is the master's clock minus this node's (the sync's).
	ClockOffset time.Duration
	HasClock    bool
	// FirewallDrops are host firewall rules that drop WireGuard's port or
	// wg0's traffic before the appliance's chains.
	FirewallDrops []string
	// RPFilter is net.ipv4.conf.{all,wg0}.rp_filter's strictest value
	// (1 strict, 2 loose); RPFilterDrops the kernel's count of packets
	// it dropped (IPReversePathFilter).
	RPFilter      int
	RPFilterDrops int64
	// Certs are the k3s server certificates: file and expiry.
	Certs map[string]time.Time
	// Mappings are where relays saw this node's pings come from (its
	// public mapping per destination), for a node without an endpoint.
	Mappings    map[string]netip.AddrPort
	HasEndpoint bool
	// K3sReady says whether k3s reports this node Ready; K3sLog is its
	// last lines.
	K3sReady *bool
	K3sLog   []string
}

// Check is one check: it adds its findings.
type Check struct {
	Name string
	Run  func(f *Facts) []Finding
}

// Checks are every check, in the order they are reported.
var Checks = []Check{
	{"firewall", firewallChecks},
	{"udp", udpChecks},
	{"key", keyChecks},
	{"mtu", mtuChecks},
	{"dns", dnsChecks},
	{"clock", clockChecks},
	{"cert", certChecks},
	{"nat", natChecks},
	{"k3s", k3sChecks},
}

// Diagnose runs every check on f.
func Diagnose(f Facts) Report {
	r := Report{Node: f.Node, Taken: f.Now, Findings: []Finding{}}
	for _, c := range Checks {
		r.Checked = append(r.Checked, c.Name)
		for _, fd := range c.Run(&f) {
			if fd.Check == "" {
				fd.Check = c.Name
			}
			r.Findings = append(r.Findings, fd)
		}
	}
	sort.SliceStable(r.Findings, func(i, j int) bool { return !r.Findings[i].Note && r.Findings[j].Note })
	return r
}

// Write writes r as JSON (asJSON) or for a human (Print), and returns
// an error when r has problems: `appliance doctor` exits 1 then.
func Write(w io.Writer, r Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		Print(w, r)
	}
	if n := r.Problems(); n > 0 {
		return fmt.Errorf("%d problem(s) found on %s", n, r.Node)
	}
	return nil
}

// Print writes r for a human.
func Print(w io.Writer, r Report) {
	if len(r.Findings) == 0 {
		fmt.Fprintf(w, "%s: healthy (checked %s)\n", r.Node, strings.Join(r.Checked, ", "))
		return
	}
	for _, f := range r.Findings {
		kind := "PROBLEM"
		if f.Note {
			kind = "NOTE"
		}
		fmt.Fprintf(w, "%s [%s] %s: %s\n    evidence: %s\n    fix: %s\n", kind, f.Check, f.Node, f.Problem, f.Evidence, f.Fix)
	}
	if r.Healthy() {
		fmt.Fprintf(w, "%s: healthy (checked %s)\n", r.Node, strings.Join(r.Checked, ", "))
	}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// PingAnswer is one answer of `appliance ping`.
type PingAnswer struct {
	Node string `json:"node"`
	// Path is "direct" or "relayed via NAME"; Addr where the tunnel
	// sends (the peer's address, or the relay's).
	Path string `json:"path"`
	Addr string `json:"addr,omitempty"`
	// ProbeRTT is the probe's round trip on WireGuard's port (0: no
	// answer, or kernel mode); TunnelRTT an ICMP echo's inside wg0 (0:
	// none, TunnelError says why).
	ProbeRTT    time.Duration `json:"probe_rtt_ns"`
	TunnelRTT   time.Duration `json:"tunnel_rtt_ns"`
	TunnelError string        `json:"tunnel_error,omitempty"`
}

// Answered says whether anything came back.
func (p PingAnswer) Answered() bool { return p.ProbeRTT > 0 || p.TunnelRTT > 0 }

// String is the answer as `appliance ping` prints it.
func (p PingAnswer) String() string {
	where := p.Path
	if p.Addr != "" {
		where += ", " + p.Addr
	}
	if !p.Answered() {
		why := "no answer"
		if p.TunnelError != "" && p.TunnelError != ErrNoReply.Error() {
			why += " (" + p.TunnelError + ")"
		}
		return fmt.Sprintf("%s: %s (%s)", p.Node, why, where)
	}
	s := fmt.Sprintf("pong from %s (%s)", p.Node, where)
	if p.ProbeRTT > 0 {
		s += " in " + ms(p.ProbeRTT)
	}
	if p.TunnelRTT > 0 {
		s += ", through wg0 in " + ms(p.TunnelRTT)
	} else {
		s += ", no echo through wg0"
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
