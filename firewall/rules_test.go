package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlanSeedRules(t *testing.T) {
	d := Plan(Params{Network: netip.MustParsePrefix("192.168.2.0/24"), Interface: "wg0", ListenPort: 5418, Egress: "eth0", Masquerade: true})
	var got []string
	for _, r := range append(d.Jumps, d.Rules...) {
		got = append(got, r.String())
	}
	want := []string{
		"-t filter -A INPUT -m comment --comment wgk3s -j WGK3S-INPUT",
		"-t filter -A FORWARD -m comment --comment wgk3s -j WGK3S-FORWARD",
		"-t nat -A POSTROUTING -m comment --comment wgk3s -j WGK3S-POSTROUTING",
		`-t filter -A WGK3S-INPUT -m comment --comment "wgk3s: return traffic" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
		`-t filter -A WGK3S-INPUT -m comment --comment "wgk3s: WireGuard UDP" -p udp --dport 5418 -j ACCEPT`,
		`-t filter -A WGK3S-INPUT -m comment --comment "wgk3s: from the mesh" -i wg0 -s 192.168.2.0/24 -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: return traffic" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: mesh forwarding" -i wg0 -o wg0 -m conntrack --ctstate NEW -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: mesh egress" -i wg0 -o eth0 -s 192.168.2.0/24 -j ACCEPT`,
		`-t nat -A WGK3S-POSTROUTING -m comment --comment "wgk3s: masquerade mesh egress" -s 192.168.2.0/24 -o eth0 -j MASQUERADE`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if d.Sysctls[0] != (Sysctl{"net.ipv4.ip_forward", "1"}) {
		t.Errorf("sysctls = %v", d.Sysctls)
	}
}

func TestPlanAcceptsTheClusterNetworksExceptFromTheInternet(t *testing.T) {
	d := Plan(Params{Network: netip.MustParsePrefix("192.168.2.0/24"), Interface: "wg0", ListenPort: 5418, Egress: "eth0",
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.43.0.0/16")}})
	var got []string
	for _, r := range d.Rules {
		if strings.Contains(r.String(), "10.4") {
			got = append(got, r.String())
		}
	}
	want := []string{
		`-t filter -A WGK3S-INPUT -m comment --comment "wgk3s: k3s 10.42.0.0/16 to this node" ! -i eth0 -s 10.42.0.0/16 -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: k3s 10.42.0.0/16 out" ! -i eth0 -s 10.42.0.0/16 -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: k3s 10.42.0.0/16 in" ! -i eth0 -d 10.42.0.0/16 -j ACCEPT`,
		`-t filter -A WGK3S-INPUT -m comment --comment "wgk3s: k3s 10.43.0.0/16 to this node" ! -i eth0 -s 10.43.0.0/16 -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: k3s 10.43.0.0/16 out" ! -i eth0 -s 10.43.0.0/16 -j ACCEPT`,
		`-t filter -A WGK3S-FORWARD -m comment --comment "wgk3s: k3s 10.43.0.0/16 in" ! -i eth0 -d 10.43.0.0/16 -j ACCEPT`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cluster rules (-want +got):\n%s", diff)
	}
}

func TestPlanWithoutMasquerade(t *testing.T) {
	d := Plan(Params{Network: netip.MustParsePrefix("10.0.0.0/24"), Interface: "wg1", ListenPort: 1, Egress: "eth0"})
	for _, r := range append(d.Jumps, d.Rules...) {
		if r.Table == "nat" || strings.Contains(r.String(), "MASQUERADE") {
			t.Errorf("masquerade off but planned %s", r)
		}
	}
}

func TestDesiredEqual(t *testing.T) {
	p := Params{Network: netip.MustParsePrefix("10.0.0.0/24"), Interface: "wg0", ListenPort: 1, Egress: "eth0", Masquerade: true}
	if !Plan(p).Equal(Plan(p)) {
		t.Error("a plan differs from itself")
	}
	q := p
	q.Egress = "eth1"
	if Plan(p).Equal(Plan(q)) {
		t.Error("plans with different egress are equal")
	}
}

func TestResolveEgressNamedMustExist(t *testing.T) {
	_, err := ResolveEgress("nosuch0")
	if err == nil || !strings.Contains(err.Error(), `firewall.egress_interface "nosuch0"`) || !strings.Contains(err.Error(), "fix:") {
		t.Errorf("ResolveEgress(nosuch0) = %v", err)
	}
	if got, err := ResolveEgress("lo"); err != nil || got != "lo" {
		t.Errorf("ResolveEgress(lo) = %q, %v", got, err)
	}
}

func TestDropsFindsHostRulesTheAppliancesCannotBeat(t *testing.T) {
	dump := `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p udp -m udp --dport 5418 -j DROP
-A PREROUTING -p udp -m udp --dport 53 -j DROP
-A PREROUTING -p tcp -m multiport --dports 22,5000:6000 -j DROP
COMMIT
*mangle
-A INPUT -i wg0 -j DROP
-A INPUT -i eth0 -j DROP
-A PREROUTING -j DROP
-A WGK3S-X -j DROP
COMMIT
*filter
-A INPUT -p udp --dport 5418 -j DROP
COMMIT
`
	got := iptablesDrops(dump, 5418, "wg0")
	want := []string{
		"iptables -t raw -A PREROUTING -p udp -m udp --dport 5418 -j DROP",
		"iptables -t raw -A PREROUTING -p tcp -m multiport --dports 22,5000:6000 -j DROP",
		"iptables -t mangle -A INPUT -i wg0 -j DROP",
		"iptables -t mangle -A PREROUTING -j DROP",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	nft := `table ip filter {
	chain INPUT {
		udp dport 5418 drop
	}
}
table inet host {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 5418 counter packets 3 bytes 444 drop
		udp dport { 22, 5418 } reject
		iifname "wg0" drop
		tcp dport 80 drop
	}
}
`
	got = nftDrops(nft, 5418, "wg0")
	want = []string{
		"nft table inet host: udp dport 5418 counter packets 3 bytes 444 drop",
		"nft table inet host: udp dport { 22, 5418 } reject",
		`nft table inet host: iifname "wg0" drop`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("nft: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
