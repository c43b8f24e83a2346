package doctor

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// base is a healthy node-1 with two peers that answer.
func base() Facts {
	return Facts{Now: now, Node: "node-1", Role: "agent", Master: "master", Keepalive: 25 * time.Second, ListenPort: 5418, Interface: "wg0", MTU: 1420,
		HasEndpoint: true, HasClock: true,
		Peers: []Peer{
			{Name: "master", Endpoint: "198.51.100.1:5418", Addr: netip.MustParseAddrPort("198.51.100.1:5418"), Handshake: now.Add(-10 * time.Second), RX: 1000, TX: 1000, HeardFromAddr: now.Add(-time.Second)},
			{Name: "node-2", Endpoint: "198.51.100.2:5418", Addr: netip.MustParseAddrPort("198.51.100.2:5418"), Handshake: now.Add(-20 * time.Second), RX: 1000, TX: 1000, HeardFromAddr: now.Add(-2 * time.Second)},
		},
		MasterView: &View{Node: "master", Peers: []Peer{
			{Name: "node-1", Handshake: now.Add(-10 * time.Second), Authentic: now.Add(-time.Second), HeardFromAddr: now.Add(-time.Second)},
			{Name: "node-2", Handshake: now.Add(-5 * time.Second), Authentic: now.Add(-time.Second), HeardFromAddr: now.Add(-time.Second)},
		}},
		MTUProbe: map[string]int{"master": 1420, "node-2": 1420},
	}
}

func only(t *testing.T, r Report, check, node string, want ...string) Finding {
	t.Helper()
	if r.Healthy() || r.Problems() != 1 {
		t.Fatalf("want one problem, got %d: %+v", r.Problems(), r.Findings)
	}
	f := r.Findings[0]
	if f.Check != check || f.Node != node {
		t.Fatalf("want a %s finding for %s, got %+v", check, node, f)
	}
	all := f.Problem + " | " + f.Evidence + " | " + f.Fix
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("the finding does not say %q:\n%s", w, all)
		}
	}
	return f
}

func TestHealthy(t *testing.T) {
	r := Diagnose(base())
	if !r.Healthy() || len(r.Findings) != 0 {
		t.Fatalf("a healthy node has findings: %+v", r.Findings)
	}
	if len(r.Checked) != len(Checks) {
		t.Fatalf("checked %v", r.Checked)
	}
}

func TestUDPDroppedTowardsThisNode(t *testing.T) {
	f := base()
	for i := range f.Peers {
		f.Peers[i].Handshake, f.Peers[i].HeardFromAddr, f.Peers[i].RX = time.Time{}, time.Time{}, 0
		f.MTUProbe[f.Peers[i].Name] = 0
	}
	only(t, Diagnose(f), "udp", "node-1", "port 5418", "security group", "open UDP 5418 inbound in node-1")
}

// A peer the master hears but that never gets answers has its inbound
// UDP dropped: told apart from a peer that is down.
func TestUDPDroppedTowardsAPeerIsNotAPeerThatIsDown(t *testing.T) {
	f := base()
	f.Peers[1].Handshake, f.Peers[1].HeardFromAddr, f.MTUProbe["node-2"] = now.Add(-10*time.Minute), time.Time{}, 0
	f.MasterView.Peers[1].Handshake = now.Add(-10 * time.Minute) // the master has no session either, but hears it
	only(t, Diagnose(f), "udp", "node-2", "never gets the answers", "open UDP 5418 inbound in node-2")

	f = base()
	f.Peers[1].Handshake, f.Peers[1].HeardFromAddr, f.MTUProbe["node-2"] = time.Time{}, time.Time{}, 0
	only(t, Diagnose(f), "udp", "node-2", "answers the master", "node-1's public address")

	f = base()
	f.Peers[1].Handshake, f.Peers[1].HeardFromAddr, f.MTUProbe["node-2"] = time.Time{}, time.Time{}, 0
	f.MasterView.Peers[1] = Peer{Name: "node-2"}
	only(t, Diagnose(f), "udp", "node-2", "is down", "systemctl status wgk3s")
}

// Handshakes that arrive and are answered, with none completed: the
// peer does not get the answers. Seen here alone, without the master.
func TestHandshakesArriveOneWayOnly(t *testing.T) {
	f := base()
	f.MasterView = nil
	f.Peers[1].Handshake, f.Peers[1].Authentic, f.MTUProbe["node-2"] = now.Add(-5*time.Minute), now.Add(-3*time.Second), 0
	only(t, Diagnose(f), "udp", "node-2", "never gets the answers", "open UDP 5418 inbound in node-2's provider security group")
}

func TestAKeyThatIsNotTheFiles(t *testing.T) {
	f := base()
	f.Peers[1].Handshake, f.MTUProbe["node-2"] = now.Add(-time.Hour), 0 // datagrams arrive, nothing authenticates
	only(t, Diagnose(f), "key", "node-2", "do not authenticate", "appliance pubkey")
}

// A relayed peer with another key: nothing from it here, but the master
// gets its datagrams and counts none.
func TestAKeySeenInTheMastersView(t *testing.T) {
	f := base()
	f.Peers[1].Handshake, f.Peers[1].HeardFromAddr, f.MTUProbe["node-2"] = time.Time{}, time.Time{}, 0
	f.MasterView.Peers[1] = Peer{Name: "node-2", HeardFromAddr: now.Add(-time.Second), HeardAt: netip.MustParseAddrPort("198.51.100.2:5418")}
	only(t, Diagnose(f), "key", "node-2", "reach the master (master) but do not authenticate", "198.51.100.2:5418", "appliance pubkey")
}

func TestPathMTU(t *testing.T) {
	f := base()
	f.MTUProbe["node-2"] = 1320
	only(t, Diagnose(f), "mtu", "node-2", "at most 1320 bytes", "interface.mtu: 1320", "1420 did not")
	f.MTUProbe["node-2"] = 0 // nothing answered: the udp check's, not an MTU
	if r := Diagnose(f); strings.Contains(r.Findings[0].Check, "mtu") {
		t.Fatalf("no answer at any size is no MTU finding: %+v", r.Findings)
	}
}

func TestUnresolvedName(t *testing.T) {
	f := base()
	f.Peers[1].Endpoint = "n2.example.net:5418"
	f.Unresolved = map[string]string{"n2.example.net": "lookup n2.example.net: no such host"}
	only(t, Diagnose(f), "dns", "node-2", "n2.example.net does not resolve", "no such host")
}

func TestClock(t *testing.T) {
	f := base()
	f.ClockOffset = 29 * time.Second
	if r := Diagnose(f); !r.Healthy() {
		t.Fatalf("29 s is within bounds: %+v", r.Findings)
	}
	f.ClockOffset = 45 * time.Second
	only(t, Diagnose(f), "clock", "node-1", "45s behind the master", "chronyd")
	f.ClockOffset = -2 * time.Minute
	only(t, Diagnose(f), "clock", "node-1", "2m0s ahead of the master")
	f.HasClock = false
	if r := Diagnose(f); !r.Healthy() {
		t.Fatalf("no clock known, no finding: %+v", r.Findings)
	}
}

func TestHostFirewall(t *testing.T) {
	f := base()
	for i := range f.Peers {
		f.Peers[i].Handshake, f.Peers[i].HeardFromAddr = time.Time{}, time.Time{}
		f.MTUProbe[f.Peers[i].Name] = 0
	}
	f.FirewallDrops = []string{"iptables -t raw -A PREROUTING -p udp --dport 5418 -j DROP"}
	// The host's own rule is named, not the provider's security group.
	r := Diagnose(f)
	if r.Findings[0].Check != "firewall" || !strings.Contains(r.Findings[0].Evidence, "-t raw") {
		t.Fatalf("want the firewall finding first: %+v", r.Findings)
	}
	for _, fd := range r.Findings {
		if strings.Contains(fd.Fix, "security group") && fd.Node == "node-1" {
			t.Fatalf("a host rule is not a security group: %+v", fd)
		}
	}

	f = base()
	f.RPFilter, f.RPFilterDrops = 1, 12
	only(t, Diagnose(f), "firewall", "node-1", "rp_filter", "12 packets", "rp_filter=2")
	f.RPFilterDrops = 0
	if r := Diagnose(f); !r.Healthy() {
		t.Fatalf("strict but nothing dropped: %+v", r.Findings)
	}
}

func TestNATKind(t *testing.T) {
	f := base()
	f.HasEndpoint = false
	f.Mappings = map[string]netip.AddrPort{"master": netip.MustParseAddrPort("203.0.113.9:40001"), "node-2": netip.MustParseAddrPort("203.0.113.9:40002")}
	r := Diagnose(f)
	if !r.Healthy() || len(r.Findings) != 1 || !r.Findings[0].Note || !strings.Contains(r.Findings[0].Problem, "symmetric") {
		t.Fatalf("a new port per destination is a symmetric NAT (a note): %+v", r.Findings)
	}
	f.Mappings["node-2"] = netip.MustParseAddrPort("203.0.113.9:5418")
	f.Mappings["master"] = netip.MustParseAddrPort("203.0.113.9:5418")
	if r := Diagnose(f); !strings.Contains(r.Findings[0].Problem, "keeps its port") {
		t.Fatalf("%+v", r.Findings)
	}
}

func TestK3sNotReady(t *testing.T) {
	f := base()
	no := false
	f.K3sReady = &no
	f.K3sLog = []string{`time="2026-12-06T11:59:00Z" level=info msg="Starting"`, `time="2026-12-06T11:59:58Z" level=error msg="failed to contact server 192.168.2.1:6443"`}
	only(t, Diagnose(f), "k3s", "node-1", "not Ready", "failed to contact server 192.168.2.1:6443")
}

func TestCertificates(t *testing.T) {
	f := base()
	f.Certs = map[string]time.Time{"/var/lib/rancher/k3s/server/tls/serving-kube-apiserver.crt": now.Add(40 * 24 * time.Hour), "/var/lib/rancher/k3s/server/tls/server-ca.crt": now.Add(3650 * 24 * time.Hour)}
	only(t, Diagnose(f), "cert", "node-1", "serving-kube-apiserver.crt expires on 2027-01-15 (in 40 days)", "systemctl restart wgk3s")
}

func TestPingAnswerSaysThePath(t *testing.T) {
	a := PingAnswer{Node: "node-2", Path: "relayed via master", Addr: "198.51.100.1:5418", ProbeRTT: 1500 * time.Microsecond, TunnelRTT: 2 * time.Millisecond}
	if got := a.String(); got != "pong from node-2 (relayed via master, 198.51.100.1:5418) in 1.50 ms, through wg0 in 2.00 ms" {
		t.Fatalf("%q", got)
	}
	if got := (PingAnswer{Node: "node-2", Path: "direct", TunnelError: "no reply"}).String(); got != "node-2: no answer (direct)" {
		t.Fatalf("%q", got)
	}
}
