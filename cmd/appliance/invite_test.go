package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/membership"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// twoMachines is a master and a new node that name the same absolute
// paths (the cluster file is identical everywhere): the shared directory
// holds one machine's files at a time.
type twoMachines struct {
	t                 *testing.T
	base, etc, on     string
	masterFile, sock  string
	nodeFile, envFile string
	original          []byte
}

func newTwoMachines(t *testing.T, sync bool) *twoMachines {
	m := &twoMachines{t: t, base: t.TempDir(), on: "master"}
	m.etc = filepath.Join(m.base, "etc")
	m.masterFile, m.sock = filepath.Join(m.base, "master.yaml"), filepath.Join(m.base, "none.sock")
	m.nodeFile, m.envFile = filepath.Join(m.base, "node.yaml"), filepath.Join(m.base, "sysconfig", "wgk3s")
	for _, d := range []string{m.etc, filepath.Join(m.base, "node-etc")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	mk, _ := wgtypes.GeneratePrivateKey()
	n1, _ := wgtypes.GeneratePrivateKey()
	write(t, filepath.Join(m.etc, "private.key"), mk.String()+"\n", 0o600)
	write(t, filepath.Join(m.etc, "token"), "server-token-for-the-test\n", 0o600)
	write(t, filepath.Join(m.etc, "agent-token"), "agent-token-for-the-test\n", 0o600)
	m.original = []byte(`# the test cluster
network: 192.168.2.0/24
interface:
  listen_port: 5418
  private_key_file: ` + m.etc + `/private.key
nodes:
  - name: k3s-master   # the master
    role: master
    address: 192.168.2.1
    endpoint: 203.0.113.10:5418
    public_key: "` + mk.PublicKey().String() + `"
  - name: k3s-node-1
    role: agent
    address: 192.168.2.2
    endpoint: 198.51.100.20:5418
    public_key: "` + n1.PublicKey().String() + `"
k3s:
  token_file: ` + m.etc + `/token
  agent_token_file: ` + m.etc + `/agent-token
`)
	if !sync {
		m.original = append(m.original, "sync: false\n"...)
	}
	write(t, m.masterFile, string(m.original), 0o644)
	return m
}

// to makes the shared directory the named machine's.
func (m *twoMachines) to(name string) {
	m.t.Helper()
	if m.on == name {
		return
	}
	if err := os.Rename(m.etc, filepath.Join(m.base, m.on+"-etc")); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.base, name+"-etc"), m.etc); err != nil {
		m.t.Fatal(err)
	}
	m.on = name
}

func (m *twoMachines) invite(args ...string) result {
	m.t.Helper()
	m.to("master")
	return run(m.t, "", append([]string{"invite", "--config", m.masterFile, "--socket", m.sock}, args...)...)
}

func (m *twoMachines) join(stdin string, args ...string) result {
	m.t.Helper()
	m.to("node")
	return run(m.t, stdin, append([]string{"join", "--config", m.nodeFile, "--env-file", m.envFile}, args...)...)
}

func codeOf(t *testing.T, r result) string {
	t.Helper()
	code, ok := strings.CutPrefix(strings.TrimSpace(r.stdout), "appliance join ")
	if r.code != 0 || !ok {
		t.Fatalf("invite: %+v", r)
	}
	return code
}

func TestInviteJoinRemove(t *testing.T) {
	m := newTwoMachines(t, true)
	r := m.invite("home-1")
	code := codeOf(t, r)
	if !strings.Contains(r.stderr, "no appliance runs here") {
		t.Errorf("invite without a running appliance should say the file waits for the start: %s", r.stderr)
	}
	data, _ := os.ReadFile(m.masterFile)
	if !bytes.HasPrefix(data, m.original[:bytes.Index(m.original, []byte("k3s:"))]) || !bytes.HasSuffix(data, m.original[bytes.Index(m.original, []byte("k3s:")):]) {
		t.Errorf("invite changed more than it inserted:\n%s", data)
	}
	cl, err := configs.Parse(data, "master")
	if err != nil {
		t.Fatal(err)
	}
	home, ok := cl.NodeByName("home-1")
	if !ok || home.Address.String() != "192.168.2.3" || home.Endpoint.Host != "" || home.Role != configs.RoleAgent {
		t.Fatalf("home-1 in the master's file: %+v", home)
	}
	recs := invites(t, m.etc)
	if len(recs) != 1 || recs[0].Node != "home-1" || recs[0].PublicKey != home.PublicKey.String() ||
		recs[0].Expires.Sub(recs[0].Invited) != membership.DefaultTTL {
		t.Fatalf("open invites = %+v", recs)
	}

	// The code from stdin: the key, the file and the role are written.
	j := m.join(code+"\n", "-")
	if j.code != 0 || !strings.Contains(j.stdout, "systemctl enable --now wgk3s") {
		t.Fatalf("join: %+v", j)
	}
	if strings.Contains(j.stdout+j.stderr, code[len(membership.Prefix):len(membership.Prefix)+20]) {
		t.Error("join echoed the code")
	}
	fi, err := os.Stat(filepath.Join(m.etc, "private.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the node's key: %v %v, want 0600", fi, err)
	}
	cfg, err := configs.Load(m.nodeFile, configs.Options{Role: configs.RoleAgent})
	if err != nil {
		t.Fatalf("the joined node's file does not load as its appliance would: %v", err)
	}
	if cfg.Self.Name != "home-1" || cfg.PrivateKey.PublicKey() != home.PublicKey || cfg.Cluster.Master().Endpoint.String() != "203.0.113.10:5418" || len(cfg.Cluster.Nodes) != 2 {
		t.Errorf("joined as %+v with %d nodes", cfg.Self, len(cfg.Cluster.Nodes))
	}
	if fi, err := os.Stat(filepath.Join(m.etc, "private.key"+membership.InvitedSuffix)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("join did not mark the key as the invite's (the appliance replaces it): %v", err)
	}
	if env, _ := os.ReadFile(m.envFile); !strings.Contains(string(env), "ROLE=agent\n") {
		t.Errorf("env file = %q", env)
	}
	// Again with the same code: nothing to do, no error.
	if j := m.join("", code); j.code != 0 {
		t.Errorf("the same join twice: %+v", j)
	}
	// Another node's code on this one: refused, nothing changed.
	code2 := codeOf(t, m.invite("home-2", "--endpoint", "198.51.100.30:5418"))
	before, _ := os.ReadFile(m.nodeFile)
	j = m.join("", code2)
	after, _ := os.ReadFile(m.nodeFile)
	if j.code != exitUsage || !strings.Contains(j.stderr, "holds another key") || !bytes.Equal(before, after) {
		t.Errorf("a second node's code: %+v (file changed: %v)", j, !bytes.Equal(before, after))
	}

	// remove gives back the master's file byte for byte, and forgets the invites.
	m.to("master")
	for _, name := range []string{"home-2", "home-1"} {
		if r := run(t, "", "remove", "--config", m.masterFile, "--socket", m.sock, name); r.code != 0 {
			t.Fatalf("remove %s: %+v", name, r)
		}
	}
	if data, _ := os.ReadFile(m.masterFile); !bytes.Equal(data, m.original) {
		t.Errorf("after removing both the file is not the original:\n%s", data)
	}
	if recs := invites(t, m.etc); len(recs) != 0 {
		t.Errorf("open invites after remove = %+v", recs)
	}
	if r := run(t, "", "remove", "--config", m.masterFile, "--socket", m.sock, "k3s-master"); r.code != exitUsage || !strings.Contains(r.stderr, "is the master") {
		t.Errorf("remove the master: %+v", r)
	}
}

func TestInviteWithPublicKeyHoldsNoSecret(t *testing.T) {
	m := newTwoMachines(t, true)
	m.to("node")
	nk, _ := wgtypes.GeneratePrivateKey()
	write(t, filepath.Join(m.etc, "private.key"), nk.String()+"\n", 0o600)
	code := codeOf(t, m.invite("office-1", "--public-key", nk.PublicKey().String(), "--address", "192.168.2.40"))
	c, err := membership.Parse(code)
	if err != nil || c.Key != nil {
		t.Fatalf("code = %v, %v; want no key in it", c, err)
	}
	if j := m.join("", code); j.code != 0 {
		t.Fatalf("join with the node's own key: %+v", j)
	}
	cfg, err := configs.Load(m.nodeFile, configs.Options{Role: configs.RoleAgent})
	if err != nil || cfg.Self.Name != "office-1" || cfg.Self.Address.String() != "192.168.2.40" {
		t.Fatalf("joined: %+v, %v", cfg, err)
	}
	if _, err := os.Stat(filepath.Join(m.etc, "private.key"+membership.InvitedSuffix)); err == nil {
		t.Error("a node with its own key is marked as holding the invite's")
	}
	// A node without the invited key is told which key the code wants.
	os.Remove(m.nodeFile)
	other, _ := wgtypes.GeneratePrivateKey()
	write(t, filepath.Join(m.etc, "private.key"), other.String()+"\n", 0o600)
	if j := m.join("", code); j.code != exitUsage || !strings.Contains(j.stderr, "not the key this code was made for") {
		t.Errorf("join with another key: %+v", j)
	}
	if _, err := os.Stat(m.nodeFile); err == nil {
		t.Error("a refused join wrote the cluster file")
	}
}

func TestJoinRefusesExpiredAndMistypedCodes(t *testing.T) {
	m := newTwoMachines(t, true)
	code := codeOf(t, m.invite("home-1", "--ttl", "10m"))
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return time.Now().Add(11 * time.Minute) }
	j := m.join("", code)
	if j.code != exitUsage || !strings.Contains(j.stderr, "expired at") || !strings.Contains(j.stderr, "appliance invite home-1") {
		t.Errorf("an expired code: %+v", j)
	}
	now = time.Now
	bad := []byte(code)
	bad[len(bad)/2] ^= 1
	j = m.join("", string(bad))
	if j.code != exitUsage || !strings.Contains(j.stderr, "mistyped") {
		t.Errorf("a mistyped code: %+v", j)
	}
	for _, p := range []string{filepath.Join(m.etc, "private.key"), m.nodeFile, m.envFile} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("a refused join wrote %s", p)
		}
	}
}

func TestInviteRefusals(t *testing.T) {
	m := newTwoMachines(t, true)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "give NAME"},
		{[]string{"Home_1"}, "not a valid Kubernetes node name"},
		{[]string{"k3s-node-1"}, `"k3s-node-1" is already in the file`},
		{[]string{"home-1", "--address", "192.168.2.2"}, "is k3s-node-1's"},
		{[]string{"home-1", "--address", "10.0.0.1"}, "inside network 192.168.2.0/24"},
		{[]string{"home-1", "--role", "master"}, "a cluster has one master"},
		{[]string{"home-1", "--endpoint", "nope"}, "--endpoint"},
		{[]string{"home-1", "--ttl", "-1h"}, "positive duration"},
		{[]string{"home-1", "--public-key", "abc"}, "not a WireGuard key"},
		{[]string{"home-1", "--public-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "low-order"},
	} {
		r := m.invite(c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("invite %v: %+v, want %q", c.args, r, c.want)
		}
	}
	if data, _ := os.ReadFile(m.masterFile); !bytes.Equal(data, m.original) {
		t.Error("a refused invite changed the file")
	}
	// --dry-run prints the lines and changes nothing.
	r := m.invite("home-1", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "+   - name: home-1") || !strings.Contains(r.stdout, "address: 192.168.2.3") {
		t.Errorf("dry run: %+v", r)
	}
	// An IPv6 endpoint: quoted in the file, and the dry run checks the
	// result as the invite would.
	r = m.invite("home-6", "--endpoint", "[2001:db8::7]:5418", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, `endpoint: "[2001:db8::7]:5418"`) {
		t.Errorf("dry run with an IPv6 endpoint: %+v", r)
	}
	if r := m.invite("home-6", "--endpoint", "[2001:db8::7]:5418"); r.code != 0 {
		t.Errorf("invite with an IPv6 endpoint: %+v", r)
	}
	if _, err := configs.Parse(mustRead(t, m.masterFile), "after"); err != nil {
		t.Errorf("the file after an IPv6 invite: %v", err)
	}
	if r := run(t, "", "remove", "--config", m.masterFile, "--socket", m.sock, "home-6"); r.code != 0 {
		t.Fatalf("remove home-6: %+v", r)
	}
	if data, _ := os.ReadFile(m.masterFile); !bytes.Equal(data, m.original) {
		t.Error("--dry-run changed the file")
	}
	// sync off: the node could not fetch anything.
	m2 := newTwoMachines(t, false)
	if r := m2.invite("home-1"); r.code != exitUsage || !strings.Contains(r.stderr, "sync: false") {
		t.Errorf("invite with sync off: %+v", r)
	}
}

func invites(t *testing.T, etc string) []membership.Invite {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(etc, membership.InvitesFile))
	if os.IsNotExist(err) {
		return nil
	}
	var recs []membership.Invite
	if err == nil {
		err = json.Unmarshal(data, &recs)
	}
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
