package configs

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const (
	keyA = "l60hi1DvIDkuWlBhkI8m0i+EzOEf0NR2f1NgEg26Byk="
	keyB = "bApVFJR6NMjUtEUgBcdbxLOEIrHcpiZ1slrKJ2LksCo="
)

// base is a minimal valid file; each bad case edits one thing in it.
const base = `network: 192.168.2.0/24
interface:
  listen_port: 5418
  mtu: 1420
  mode: auto
  persistent_keepalive: 25s
nodes:
  - name: k3s-master
    role: master
    address: 192.168.2.1
    endpoint: 203.0.113.10:5418
    public_key: "` + keyA + `"
  - name: k3s-node-1
    role: agent
    address: 192.168.2.2
    endpoint: node1.example.net:5418
    public_key: "` + keyB + `"
k3s:
  server_args: ["--disable=traefik"]
`

func TestParseExample(t *testing.T) {
	cl, err := Parse(Example, "configs/wgk3s.yaml")
	if err != nil {
		t.Fatalf("the shipped example does not parse:\n%v", err)
	}
	if got, want := cl.Network, netip.MustParsePrefix("192.168.2.0/24"); got != want {
		t.Errorf("network = %v, want %v", got, want)
	}
	if got := cl.Master().Name; got != "k3s-master" {
		t.Errorf("master = %q, want k3s-master", got)
	}
	if got := len(cl.Peers("k3s-master")); got != 1 {
		t.Errorf("master has %d peers, want 1", got)
	}
	if cl.Interface.ListenPort != 5418 || cl.Interface.Name != "wg0" {
		t.Errorf("interface = %+v, want wg0 on 5418", cl.Interface)
	}
}

func TestParseDefaults(t *testing.T) {
	const minimal = `network: 10.9.0.1/16
nodes:
  - {name: m, role: master, address: 10.9.0.1, endpoint: "[2001:db8::1]:51820", public_key: "` + keyA + `"}
  - {name: a, role: agent, address: 10.9.0.2, public_key: "` + keyB + `"}
`
	cl, err := Parse([]byte(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Interface{Name: "wg0", ListenPort: 51820, MTU: 1420, Mode: ModeAuto,
		PrivateKeyFile: DefaultPrivateKeyFile, PersistentKeepalive: 25 * time.Second}
	if diff := cmp.Diff(want, cl.Interface); diff != "" {
		t.Errorf("interface defaults (-want +got):\n%s", diff)
	}
	if cl.Network.String() != "10.9.0.0/16" {
		t.Errorf("network = %v, want the masked 10.9.0.0/16", cl.Network)
	}
	if cl.Firewall != (Firewall{EgressInterface: EgressAuto, Masquerade: true, Backend: "auto"}) {
		t.Errorf("firewall defaults = %+v", cl.Firewall)
	}
	if cl.Runtime != (Runtime{MemoryLimit: 96<<20 + int64(len(cl.Nodes))*128<<10, BatchSize: 0, Inflight: 128}) {
		t.Errorf("runtime defaults = %+v", cl.Runtime)
	}
	if cl.K3s.Binary != DefaultK3sBinary || cl.K3s.TokenFile != DefaultTokenFile ||
		cl.K3s.Advertise != AdvertiseWireGuard || cl.K3s.StopGracePeriod != DefaultStopGrace {
		t.Errorf("k3s defaults = %+v", cl.K3s)
	}
	m := cl.Master()
	if m.Endpoint.String() != "[2001:db8::1]:51820" || m.ExternalIP.String() != "2001:db8::1" {
		t.Errorf("master endpoint %v external %v", m.Endpoint, m.ExternalIP)
	}
	if a, _ := cl.NodeByName("a"); a.Endpoint.Host != "" || a.ExternalIP.IsValid() {
		t.Errorf("agent without endpoint got %+v", a)
	}
	if k, _ := wgtypes.ParseKey(keyB); cl.Peers("m")[0].PublicKey != k {
		t.Errorf("peer key not parsed")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"off": 0, "256MiB": 256 << 20, "1GiB": 1 << 30, "65536KiB": 64 << 20, "100000000": 100000000} {
		if got, problem := parseSize(in); problem != "" || got != want {
			t.Errorf("parseSize(%q) = %d, %q; want %d", in, got, problem, want)
		}
	}
	for _, bad := range []string{"", "1.5GiB", "-1MiB", "1TB", "MiB", "99999999999GiB"} {
		if _, problem := parseSize(bad); problem == "" {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestParseKeepaliveForms(t *testing.T) {
	for in, want := range map[string]time.Duration{"25": 25 * time.Second, "0": 0, "off": 0, "1m": time.Minute} {
		got, ok := parseKeepalive(in)
		if !ok || got != want {
			t.Errorf("parseKeepalive(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name    string
		old     string // replaced in base (first occurrence)
		new     string
		field   string // FieldError.Field wanted
		line    int    // wanted line, 0 = don't care
		problem string // substring of the problem
		fix     string // substring of the fix
	}{
		{"network missing", "network: 192.168.2.0/24\n", "", "network", 0, "missing", "network: 192.168.2.0/24"},
		{"network not a prefix", "192.168.2.0/24", "192.168.2.0", "network", 1, "not an IP prefix", "IPv4 prefix"},
		{"network ipv6", "192.168.2.0/24", "fd00::/64", "network", 1, "not IPv4", "IPv4"},
		{"network too small", "192.168.2.0/24", "192.168.2.0/31", "network", 1, "no room", "/30 or shorter"},
		{"unknown top key", "network:", "netwrok: x\nnetwork:", "netwrok", 1, `unknown key "netwrok"`, "network, interface, nodes, firewall, k3s"},
		{"unknown node key", "    role: agent\n", "    role: agent\n    adress: 1.2.3.4\n", "nodes[1].adress", 15, `unknown key "adress"`, "address"},
		{"listen port range", "listen_port: 5418", "listen_port: 70000", "interface.listen_port", 3, "out of range", "1 to 65535"},
		{"listen port type", "listen_port: 5418", "listen_port: udp", "interface.listen_port", 3, `"udp" is not a whole number`, "write a whole number"},
		{"mtu low", "mtu: 1420", "mtu: 576", "interface.mtu", 4, "out of range", "1280 to 9000"},
		{"mtu high", "mtu: 1420", "mtu: 9001", "interface.mtu", 4, "out of range", "1280 to 9000"},
		{"mode", "mode: auto", "mode: fast", "interface.mode", 5, `"fast" is not a mode`, "auto, kernel or userspace"},
		{"keepalive range", "keepalive: 25s", "keepalive: 70000s", "interface.persistent_keepalive", 6, "not a keepalive", "0 (off) to 65535"},
		{"keepalive fraction", "keepalive: 25s", "keepalive: 1.5s", "interface.persistent_keepalive", 6, "not a keepalive", "whole seconds"},
		{"interface name", "interface:\n", "interface:\n  name: wireguard-interface0\n", "interface.name", 3, "not a valid Linux interface name", "1 to 15"},
		{"key file relative", "interface:\n", "interface:\n  private_key_file: private.key\n", "interface.private_key_file", 3, "not an absolute path", "/etc/wgk3s/private.key"},
		{"no nodes", "nodes:", "nodes: []\nx_nodes:", "", 0, "", ""}, // unknown key + empty list; checked below
		{"no master", "role: master", "role: agent", "nodes", 0, "no node has role master", "exactly one"},
		{"two masters", "role: agent", "role: master", "nodes[1].role", 14, "a second master", "role: agent"},
		{"bad role", "role: agent", "role: worker", "nodes[1].role", 14, `"worker" is not a role`, "master, server (another k3s server, with etcd) or agent"},
		{"missing role", "    role: agent\n", "", "nodes[1].role", 13, "missing", "role: agent"},
		{"duplicate name", "name: k3s-node-1", "name: k3s-master", "nodes[1].name", 13, "already used by nodes[0]", "its own name"},
		{"bad name", "name: k3s-node-1", "name: K3s_Node", "nodes[1].name", 13, "not a valid Kubernetes node name", "lower-case"},
		{"address outside", "address: 192.168.2.2", "address: 192.168.3.2", "nodes[1].address", 15, "outside network 192.168.2.0/24", "inside 192.168.2.0/24"},
		{"address network", "address: 192.168.2.2", "address: 192.168.2.0", "nodes[1].address", 15, "network address", "192.168.2.1"},
		{"address broadcast", "address: 192.168.2.2", "address: 192.168.2.255", "nodes[1].address", 15, "broadcast address", "below"},
		{"address duplicate", "address: 192.168.2.2", "address: 192.168.2.1", "nodes[1].address", 15, "already used by nodes[0]", "its own address"},
		{"address with prefix", "address: 192.168.2.2", "address: 192.168.2.2/24", "nodes[1].address", 15, "not an IP address", "without a prefix"},
		{"endpoint no port", "endpoint: node1.example.net:5418", "endpoint: node1.example.net", "nodes[1].endpoint", 16, "not host:port", "host:port"},
		{"endpoint bad port", "endpoint: node1.example.net:5418", "endpoint: node1.example.net:0", "nodes[1].endpoint", 16, "not from 1 to 65535", "host:port"},
		{"endpoint bad host", "endpoint: node1.example.net:5418", "endpoint: node_1!:5418", "nodes[1].endpoint", 16, "neither an IP address nor a DNS name", "host:port"},
		{"endpoint bad ip", "endpoint: node1.example.net:5418", "endpoint: 300.1.1.1:5418", "nodes[1].endpoint", 16, "neither an IP address nor a DNS name", "host:port"},
		{"master without endpoint", "    endpoint: 203.0.113.10:5418\n", "", "nodes[0].endpoint", 0, "agents need it", "public IP"},
		{"external ip", "    role: agent\n", "    role: agent\n    external_ip: nope\n", "nodes[1].external_ip", 15, `"nope" is not an IP address`, "public IP"},
		{"public key missing", `    public_key: "` + keyB + `"` + "\n", "", "nodes[1].public_key", 0, "missing", "appliance init"},
		{"public key short", keyB, "AAAA", "nodes[1].public_key", 17, "base64 of 32 bytes", "44-character"},
		{"public key duplicate", keyB, keyA, "nodes[1].public_key", 17, "same key as nodes[0]", "its own key pair"},
		{"public key all zeros", keyB, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "nodes[1].public_key", 17, "low-order Curve25519 point", "appliance pubkey"},
		{"public key one", keyB, "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "nodes[1].public_key", 17, "low-order Curve25519 point", "appliance pubkey"},
		{"egress name", "k3s:", "firewall:\n  egress_interface: eth0/1\nk3s:", "firewall.egress_interface", 19, "not a valid interface name", "auto"},
		{"masquerade type", "k3s:", "firewall:\n  masquerade: sometimes\nk3s:", "firewall.masquerade", 19, "not true or false", "true or false"},
		{"backend", "k3s:", "firewall:\n  backend: ipfw\nk3s:", "firewall.backend", 19, `"ipfw" is not an iptables backend`, "auto"},
		{"interface is the egress", "k3s:", "firewall:\n  egress_interface: wg0\nk3s:", "interface.name", 0, `"wg0" is also firewall.egress_interface`, "free name"},
		{"metrics listen", "k3s:", "metrics:\n  enabled: true\n  listen: localhost\nk3s:", "metrics.listen", 20, `"localhost" is not IP:PORT`, "127.0.0.1:9586"},
		{"metrics on the API port", "k3s:", "metrics:\n  enabled: true\n  listen: 127.0.0.1:6443\nk3s:", "metrics.listen", 20, "port 6443 is the k3s API server's", "another port"},
		{"metrics on the kubelet port", "k3s:", "metrics:\n  enabled: true\n  listen: 0.0.0.0:10250\nk3s:", "metrics.listen", 20, "port 10250 is the kubelet's", "another port"},
		{"memory limit", "k3s:", "runtime:\n  memory_limit: lots\nk3s:", "runtime.memory_limit", 19, `"lots" is not a memory limit`, "96MiB"},
		{"memory limit too small", "k3s:", "runtime:\n  memory_limit: 1MiB\nk3s:", "runtime.memory_limit", 19, "less than the 32MiB", "at least 32MiB"},
		{"batch size too large", "k3s:", "runtime:\n  batch_size: 129\nk3s:", "runtime.batch_size", 19, "129 is out of range", "from 1 to 128"},
		{"inflight too small", "k3s:", "runtime:\n  inflight_packets: 10\nk3s:", "runtime.inflight_packets", 19, "10 is out of range", "from 64 to 65536, or 0 for no bound"},
		{"snapshot interval too short", "k3s:", "snapshots:\n  interval: 5s\nk3s:", "snapshots.interval", 19, `"5s" is not an interval`, "from 10s to 24h"},
		{"snapshot interval not a duration", "k3s:", "snapshots:\n  interval: hourly\nk3s:", "snapshots.interval", 19, `"hourly" is not an interval`, "such as 10m"},
		{"snapshots kept none", "k3s:", "snapshots:\n  keep: 0\nk3s:", "snapshots.keep", 19, "0 copies is out of range", "from 1 to 100"},
		{"batch size negative", "k3s:", "runtime:\n  batch_size: -1\nk3s:", "runtime.batch_size", 19, "-1 is out of range", "0 for wireguard-go's own"},
		{"advertise", "k3s:\n", "k3s:\n  advertise: public\n", "k3s.advertise", 19, `"public" is not a choice`, "wireguard"},
		{"owned flag", `["--disable=traefik"]`, `["--disable=traefik", "--node-ip=1.2.3.4"]`, "k3s.server_args[1]", 19, "--node-ip is a flag the appliance owns", "remove it"},
		{"token in argv", `["--disable=traefik"]`, `["--token", "s3cret"]`, "k3s.server_args[0]", 19, "--token is a flag the appliance owns", "visible to every user"},
		{"token one dash", `["--disable=traefik"]`, `["-token=SECRET"]`, "k3s.server_args[0]", 19, "--token is a flag the appliance owns", "visible to every user"},
		{"node-ip one dash", `["--disable=traefik"]`, `["-node-ip=1.2.3.4"]`, "k3s.server_args[0]", 19, "--node-ip is a flag the appliance owns", "remove it"},
		{"node-name one dash", `["--disable=traefik"]`, `["-node-name=x"]`, "k3s.server_args[0]", 19, "--node-name is a flag the appliance owns", "remove it"},
		{"value after a space", `["--disable=traefik"]`, `["--token-file /x"]`, "k3s.server_args[0]", 19, "--token-file is a flag the appliance owns", "k3s.token_file"},
		{"short token", `["--disable=traefik"]`, `["--t=x"]`, "k3s.server_args[0]", 19, "-t is a flag the appliance owns", "visible"},
		{"agent token", `["--disable=traefik"]`, `["--agent-token=x"]`, "k3s.server_args[0]", 19, "--agent-token is a flag the appliance owns", "k3s.agent_token_file"},
		{"agent token file", `["--disable=traefik"]`, `["--agent-token-file=/x"]`, "k3s.server_args[0]", 19, "--agent-token-file is a flag the appliance owns", "k3s.agent_token_file"},
		{"agent token file relative", "k3s:\n", "k3s:\n  agent_token_file: agent-token\n", "k3s.agent_token_file", 19, "not an absolute path", "/etc/wgk3s/agent-token"},
		{"agent token file is the server's", "k3s:\n", "k3s:\n  agent_token_file: /etc/wgk3s/token\n", "k3s.agent_token_file", 19, "same file as k3s.token_file", "its own file"},
		{"cluster cidr", `["--disable=traefik"]`, `["--cluster-cidr", "10.42.0.0/33"]`, "k3s.server_args[1]", 19, `--cluster-cidr "10.42.0.0/33" is not a CIDR`, "10.42.0.0/16"},
		{"grace period", "k3s:\n", "k3s:\n  stop_grace_period: forever\n", "k3s.stop_grace_period", 19, "not a grace period", "1s to 10m"},
		{"binary relative", "k3s:\n", "k3s:\n  binary: k3s\n", "k3s.binary", 19, "not an absolute path", "/usr/local/bin/k3s"},
		{"args type", `server_args: ["--disable=traefik"]`, "server_args: --disable=traefik", "k3s.server_args", 19, "not a list of strings", "list of strings"},
		{"syntax", "  mtu: 1420\n", "  mtu: 1420\n\tmode: auto\n", "", 4, "not valid YAML", "indentation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("test bug: %q not in base", tt.old)
			}
			in := strings.Replace(base, tt.old, tt.new, 1)
			_, err := Parse([]byte(in), "cluster.yaml")
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", in)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, want Errors", err)
			}
			if tt.name == "no nodes" {
				if !strings.Contains(err.Error(), "no nodes are listed") || !strings.Contains(err.Error(), `unknown key "x_nodes"`) {
					t.Fatalf("want both problems reported, got:\n%v", err)
				}
				return
			}
			fe := find(es, tt.field, tt.problem)
			if fe == nil {
				t.Fatalf("no error for field %q with problem %q; got:\n%v", tt.field, tt.problem, err)
			}
			if !strings.Contains(fe.Fix, tt.fix) {
				t.Errorf("fix = %q, want it to mention %q", fe.Fix, tt.fix)
			}
			if tt.line != 0 && fe.Line != tt.line {
				t.Errorf("line = %d, want %d", fe.Line, tt.line)
			}
			if fe.File != "cluster.yaml" || !strings.HasPrefix(fe.Error(), "cluster.yaml:") {
				t.Errorf("message does not start with the file name: %q", fe.Error())
			}
		})
	}
}

func find(es Errors, field, problem string) *FieldError {
	for _, e := range es {
		if e.Field == field && strings.Contains(e.Problem, problem) {
			return e
		}
	}
	return nil
}

func TestParseReportsAllProblemsTogether(t *testing.T) {
	in := strings.NewReplacer("mtu: 1420", "mtu: 10", "mode: auto", "mode: turbo",
		"address: 192.168.2.2", "address: 10.0.0.2", keyB, "xyz").Replace(base)
	_, err := Parse([]byte(in), "c.yaml")
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %v, want Errors", err)
	}
	var fields []string
	for _, e := range es {
		fields = append(fields, e.Field)
	}
	want := []string{"interface.mtu", "interface.mode", "nodes[1].address", "nodes[1].public_key"}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("fields reported, in file order (-want +got):\n%s", diff)
	}
}

func TestParseTypeErrorIsNotAlsoMissing(t *testing.T) {
	in := strings.Replace(base, "endpoint: 203.0.113.10:5418", "endpoint: [203.0.113.10, 5418]", 1)
	_, err := Parse([]byte(in), "c.yaml")
	if err == nil {
		t.Fatal("accepted a list as endpoint")
	}
	if n := strings.Count(err.Error(), "nodes[0].endpoint"); n != 1 {
		t.Errorf("nodes[0].endpoint reported %d times, want once:\n%v", n, err)
	}
}

// TestABinaryFileIsNamedSo: the YAML hint about indentation is no help
// for a binary given as the cluster file.
func TestABinaryFileIsNamedSo(t *testing.T) {
	_, err := Parse([]byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00>\x00\xff\xfe:\n\t\x00"), "/usr/bin/appliance")
	var fe Errors
	if !errors.As(err, &fe) || len(fe) != 1 || !strings.Contains(fe[0].Problem, "not a text file") || strings.Contains(fe[0].Fix, "indentation") {
		t.Errorf("a binary file: %v", err)
	}
}

func TestParseEmptyAndScalar(t *testing.T) {
	for _, in := range []string{"", "   \n", "# only a comment\n", "---\n", "just a string", "- a\n- b\n"} {
		if _, err := Parse([]byte(in), "c.yaml"); err == nil {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

// TestDuplicateKeyIsTheOnlyProblem: a duplicated key leaves its mapping
// undecoded; no made-up "missing" problems may follow it.
func TestDuplicateKeyIsTheOnlyProblem(t *testing.T) {
	for _, dup := range []string{"network: 192.168.3.0/24\n", "nodes: []\n"} {
		_, err := Parse([]byte(base+dup), "cluster.yaml")
		var es Errors
		if !errors.As(err, &es) || len(es) != 1 || !strings.Contains(es[0].Problem, "already defined at line") {
			t.Errorf("duplicate %q: %v", dup, err)
		}
	}
}

func TestClusterCIDRs(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "[10.42.0.0/16 10.43.0.0/16]"},
		{[]string{"--cluster-cidr=10.100.0.0/16"}, "[10.100.0.0/16 10.43.0.0/16]"},
		{[]string{"-service-cidr", "10.200.0.0/16", "--disable=traefik"}, "[10.42.0.0/16 10.200.0.0/16]"},
		{[]string{"--cluster-cidr=10.42.0.0/16,2001:cafe:42::/56", "--service-cidr 10.43.0.1/16"}, "[10.42.0.0/16 10.43.0.0/16]"},
	}
	for _, tt := range tests {
		var c collector
		pods, services := clusterCIDRs(tt.args, &c)
		if got := fmt.Sprint(append(pods, services...)); got != tt.want || c.err() != nil {
			t.Errorf("clusterCIDRs(%q) = %s, %v; want %s", tt.args, got, c.err(), tt.want)
		}
	}
}

// secretInArgv is an independent reading of what k3s's flag parser would
// take as the token or agent token: one or two dashes, the name, then the
// end, = or white space.
var secretInArgv = regexp.MustCompile(`^\s*--?(t|token|agent-token)(\s|=|$)`)

// FuzzExtraArgs checks that no server_args or agent_args the validation
// accepts can hand k3s a token inline.
func FuzzExtraArgs(f *testing.F) {
	for _, s := range []string{"--token=x", "-token=SECRET", "--disable=traefik", "-t\tx", " --token x", "--token-file=/x", "--agent-token=y", "--kubelet-arg=fail-cgroupv1=false"} {
		f.Add(s, "--node-label=a=b")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		var c collector
		validateExtraArgs("k3s.server_args", []string{a, b}, &c)
		if c.err() != nil {
			return
		}
		for _, arg := range []string{a, b} {
			if secretInArgv.MatchString(arg) {
				t.Fatalf("accepted %q, which passes a token inline", arg)
			}
		}
	})
}

// TestHugeValuesAreQuotedShort: a 5 MB value must not become a 5 MB
// error message or log line.
func TestHugeValuesAreQuotedShort(t *testing.T) {
	huge := strings.Repeat("x", 5<<20)
	for _, edit := range []struct{ old, new string }{
		{"mode: auto", "mode: " + huge},
		{"name: k3s-node-1", "name: " + huge},
		{"endpoint: node1.example.net:5418", "endpoint: " + huge},
		{"  mtu: 1420\n", "  mtu: 1420\n  " + huge + ": 1\n"},
		{`["--disable=traefik"]`, `["--cluster-cidr=` + huge + `"]`},
	} {
		_, err := Parse([]byte(strings.Replace(base, edit.old, edit.new, 1)), "cluster.yaml")
		if err == nil {
			t.Fatal("a huge value was accepted")
		}
		if len(err.Error()) > 2000 {
			t.Errorf("error of %d bytes: %.300s", len(err.Error()), err)
		}
	}
}

func TestQuoteIsShort(t *testing.T) {
	long := strings.Repeat("x", 50<<20)
	got := quote(long)
	if len(got) > 100 || !strings.Contains(got, "52428800 bytes") {
		t.Errorf("quote of 50 MB = %d bytes: %.120s", len(got), got)
	}
	if quote("eth0") != `"eth0"` {
		t.Errorf("quote(eth0) = %s", quote("eth0"))
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Example)
	f.Add([]byte(base))
	f.Add([]byte("network: [\n"))
	f.Add([]byte("nodes:\n  - name: a\n    address: 1.2.3.4\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cl, err := Parse(data, "fuzz.yaml")
		if err == nil {
			// Anything accepted must satisfy the invariants the rest of the
			// appliance relies on.
			if cl.Master().Name == "" {
				t.Fatalf("accepted a cluster without a master")
			}
			for _, n := range cl.Nodes {
				if !cl.Network.Contains(n.Address) {
					t.Fatalf("accepted %v outside %v", n.Address, cl.Network)
				}
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %T %v is not a non-empty Errors", err, err)
		}
	})
}

// TestMessagesNameTheRealProblem: one problem, one message, with a fix
// the file does not already meet, and no made-up problem beside it.
func TestMessagesNameTheRealProblem(t *testing.T) {
	tests := []struct {
		name, old, new string
		want           []string
		not            []string
	}{
		{"a fraction of a packet", "k3s:", "runtime:\n  inflight_packets: 12.5\nk3s:",
			[]string{"runtime.inflight_packets: \"12.5\" is not a whole number"}, []string{"12 is out of range"}},
		{"a fraction accepted as the whole", "k3s:", "runtime:\n  inflight_packets: 128.9\nk3s:",
			[]string{"runtime.inflight_packets: \"128.9\" is not a whole number"}, nil},
		{"a mapping for a port", "listen_port: 5418", "listen_port: {a: 1}",
			[]string{"interface.listen_port: a mapping is not a whole number"}, []string{"out of range"}},
		{"a fraction of an MTU", "mtu: 1420", "mtu: 1420.5",
			[]string{"interface.mtu: \"1420.5\" is not a whole number"}, nil},
		{"a unit it does not know", "k3s:", "runtime:\n  memory_limit: 1TiB\nk3s:",
			[]string{"runtime.memory_limit", "TiB", "GiB"}, []string{"at least 32MiB such as"}},
		{"zero memory", "k3s:", "runtime:\n  memory_limit: 0\nk3s:",
			[]string{"runtime.memory_limit", "write off for no limit"}, nil},
		{"a bad master endpoint", "endpoint: 203.0.113.10:5418", "endpoint: 203.0.113.10",
			[]string{"nodes[0].endpoint", "not host:port"}, []string{"missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(base, tt.old) {
				t.Fatalf("test bug: %q not in base", tt.old)
			}
			_, err := Parse([]byte(strings.Replace(base, tt.old, tt.new, 1)), "wgk3s.yaml")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the message lacks %q:\n%v", w, err)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("the message has %q:\n%v", n, err)
				}
			}
		})
	}
}
