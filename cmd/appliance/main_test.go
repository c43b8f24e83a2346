package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// result is one in-process run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, root: t.TempDir()}
	code := mainE(args, e)
	return result{code, out.String(), errb.String()}
}

func TestGenkeyPubkeyRoundTrip(t *testing.T) {
	g := run(t, "", "genkey")
	if g.code != 0 {
		t.Fatalf("genkey: %+v", g)
	}
	priv, err := wgtypes.ParseKey(strings.TrimSpace(g.stdout))
	if err != nil {
		t.Fatalf("genkey printed %q: %v", g.stdout, err)
	}
	p := run(t, g.stdout, "pubkey")
	if p.code != 0 || strings.TrimSpace(p.stdout) != priv.PublicKey().String() {
		t.Fatalf("pubkey = %+v, want %s", p, priv.PublicKey())
	}
}

func TestGenkeyOutIsPrivateAndNotOverwritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "private.key")
	if r := run(t, "", "genkey", "--out", path); r.code != 0 || r.stdout != "" {
		t.Fatalf("genkey --out: %+v (the key must not go to stdout)", r)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	before, _ := os.ReadFile(path)
	r := run(t, "", "genkey", "--out", path)
	after, _ := os.ReadFile(path)
	if r.code != exitUsage || !strings.Contains(r.stderr, "already exists") || !bytes.Equal(before, after) {
		t.Fatalf("second genkey --out: %+v; file changed: %v", r, !bytes.Equal(before, after))
	}
}

func TestPubkeyRejectsGarbageWithoutEcho(t *testing.T) {
	r := run(t, "my-secret-not-a-key\n", "pubkey")
	if r.code != exitUsage || strings.Contains(r.stderr, "my-secret") {
		t.Fatalf("pubkey on garbage: %+v", r)
	}
}

func TestInitMaster(t *testing.T) {
	dir := t.TempDir()
	key, tok := filepath.Join(dir, "k", "private.key"), filepath.Join(dir, "k", "token")
	args := []string{"init", "--name", "k3s-master", "--address", "192.168.2.1", "--endpoint", "203.0.113.10:5418",
		"--role", "master", "--key-file", key, "--token-file", tok}
	r := run(t, "", args...)
	if r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	for _, p := range []string{key, tok} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", p, fi, err)
		}
	}
	secret, _ := os.ReadFile(key)
	token, _ := os.ReadFile(tok)
	if strings.Contains(r.stdout+r.stderr, strings.TrimSpace(string(secret))) || strings.Contains(r.stdout+r.stderr, strings.TrimSpace(string(token))) {
		t.Fatal("init printed a secret")
	}
	// The printed entry is valid YAML for the nodes list and carries the
	// key file's public key.
	cluster := "network: 192.168.2.0/24\nnodes:\n" + r.stdout
	cl, err := configs.Parse([]byte(cluster), "pasted.yaml")
	if err != nil {
		t.Fatalf("pasted entry does not parse: %v\n%s", err, cluster)
	}
	k, _ := wgtypes.ParseKey(strings.TrimSpace(string(secret)))
	if m := cl.Master(); m.PublicKey != k.PublicKey() || m.Endpoint.String() != "203.0.113.10:5418" {
		t.Errorf("entry = %+v", m)
	}
	// A second init reuses the key and the token.
	r2 := run(t, "", args...)
	token2, _ := os.ReadFile(tok)
	if r2.code != 0 || r2.stdout != r.stdout || !bytes.Equal(token, token2) {
		t.Errorf("second init changed the entry or token: %+v", r2)
	}
}

func TestInitAgentHasNoToken(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	r := run(t, "", "init", "--name", "n1", "--address", "192.168.2.2", "--key-file", filepath.Join(dir, "k"), "--token-file", tok)
	if r.code != 0 || !strings.Contains(r.stdout, "role: agent") || strings.Contains(r.stdout, "endpoint") {
		t.Fatalf("init agent: %+v", r)
	}
	if _, err := os.Stat(tok); !os.IsNotExist(err) {
		t.Errorf("agent init created a token: %v", err)
	}
}

func TestInitBadFlagsReportedTogether(t *testing.T) {
	dir := t.TempDir()
	r := run(t, "", "init", "--name", "Bad_Name", "--address", "nope", "--role", "master", "--key-file", filepath.Join(dir, "k"))
	if r.code != exitUsage {
		t.Fatalf("code = %d", r.code)
	}
	for _, want := range []string{"--name", "--address", "--endpoint is required on the master"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("bad init created files: %v", entries)
	}
}

// exampleFixture writes the shipped example with real secret files, this
// node being the master, egress pinned to lo and k3s to an executable.
func exampleFixture(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	k, _ := wgtypes.GeneratePrivateKey()
	keyFile, tokFile, bin := filepath.Join(dir, "private.key"), filepath.Join(dir, "token"), filepath.Join(dir, "k3s")
	write(t, keyFile, k.String(), 0o600)
	write(t, tokFile, "tok", 0o600)
	write(t, bin, "#!/bin/sh\n", 0o755)
	body := strings.NewReplacer(
		"l60hi1DvIDkuWlBhkI8m0i+EzOEf0NR2f1NgEg26Byk=", k.PublicKey().String(),
		configs.DefaultPrivateKeyFile, keyFile, configs.DefaultTokenFile, tokFile, configs.DefaultK3sBinary, bin,
		"egress_interface: auto", "egress_interface: lo",
	).Replace(string(configs.Example))
	path = filepath.Join(dir, "wgk3s.yaml")
	write(t, path, body, 0o644)
	return dir, path
}

func write(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPrintsPlan(t *testing.T) {
	dir, path := exampleFixture(t)
	r := run(t, "", "check", "--role", "master", "--config", path)
	if r.code != 0 {
		t.Fatalf("check: %+v", r)
	}
	for _, want := range []string{
		"Plan for k3s-master (master)", "Nothing has been changed",
		"mode         userspace", // the test root has no WireGuard module
		"wg0, address 192.168.2.1/24, mtu 1420, listening on udp/5418",
		"k3s-node-1", "allowed-ips 192.168.2.2/32, endpoint 198.51.100.20:5418, keepalive 25s",
		"net.ipv4.ip_forward = 1",
		"-s 192.168.2.0/24 -o lo -j MASQUERADE",
		dir + "/k3s server --node-ip 192.168.2.1",
		"--token-file " + dir + "/token",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestCheckBrokenFileListsAllAndChangesNothing(t *testing.T) {
	dir, path := exampleFixture(t)
	body, _ := os.ReadFile(path)
	broken := strings.NewReplacer("mtu: 1420", "mtu: 99999", "mode: auto", "mode: magic", "address: 192.168.2.2", "address: 10.0.0.2").Replace(string(body))
	write(t, path, broken, 0o644)
	before := listDir(t, dir)
	r := run(t, "", "check", "--role", "master", "--config", path)
	if r.code != exitUsage {
		t.Fatalf("code = %d, want %d; %+v", r.code, exitUsage, r)
	}
	if r.stdout != "" {
		t.Errorf("a broken file still printed a plan:\n%s", r.stdout)
	}
	for _, want := range []string{"3 problem(s)", "nothing was changed", ":22: interface.mtu", ":23: interface.mode", "nodes[1].address", "fix:"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if diff := cmp.Diff(before, listDir(t, dir)); diff != "" {
		t.Errorf("check changed files (-before +after):\n%s", diff)
	}
}

func TestCheckMissingK3sIsAHostProblem(t *testing.T) {
	dir, path := exampleFixture(t)
	os.Remove(filepath.Join(dir, "k3s"))
	r := run(t, "", "check", "--config", path)
	if r.code != exitFailure || !strings.Contains(r.stdout, "INSTALL_K3S_SKIP_START=true") {
		t.Fatalf("check without k3s: %+v", r)
	}
}

func TestRunValidatesFirst(t *testing.T) {
	dir, path := exampleFixture(t)
	// No k3s: whatever else passes, the run cannot get past its pre-flight.
	os.Remove(filepath.Join(dir, "k3s"))
	if r := run(t, "", "--config", path); r.code != exitUsage || !strings.Contains(r.stderr, "--role is required") {
		t.Errorf("run without --role: %+v", r)
	}
	if r := run(t, "", "--role", "agent", "--config", path); r.code != exitUsage || !strings.Contains(r.stderr, "is master in the file") {
		t.Errorf("run with the wrong role: %+v", r)
	}
	// Without a k3s binary the pre-flight stops the run before anything
	// changes: this test never runs the appliance in the root namespace.
	if r := run(t, "", "--role", "master", "--config", path); r.code != exitUsage || !strings.Contains(r.stderr, "INSTALL_K3S_SKIP_START=true") {
		t.Errorf("run without k3s: %+v", r)
	}
}

func TestUsage(t *testing.T) {
	if r := run(t, ""); r.code != exitUsage || !strings.Contains(r.stderr, "Usage:") {
		t.Errorf("no args: %+v", r)
	}
	if r := run(t, "", "frobnicate"); r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %+v", r)
	}
	if r := run(t, "", "--help"); r.code != 0 || !strings.Contains(r.stdout, "appliance genkey") {
		t.Errorf("--help: %+v", r)
	}
	for _, c := range commands {
		if r := run(t, "", c.name, "--help"); r.code != 0 || !strings.Contains(r.stderr, "Usage: appliance "+c.name) {
			t.Errorf("%s --help: %+v", c.name, r)
		}
	}
	if r := run(t, "", "version"); r.code != 0 || r.stdout != "appliance dev\n" {
		t.Errorf("version: %+v", r)
	}
	if r := run(t, "", "check", "--bogus"); r.code != exitUsage {
		t.Errorf("bad flag: %+v", r)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b, _ := os.ReadFile(p)
			out = append(out, p+" "+fi.Mode().String()+" "+string(b))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestTheREADMEsCommandsAreTheTable: the README's commands table is what
// `appliance help --markdown` prints from the one table in commands.go.
func TestTheREADMEsCommandsAreTheTable(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	start := strings.Index(readme, "### Commands and exit codes\n\n")
	if start < 0 {
		t.Fatal("the README has no \"### Commands and exit codes\" section")
	}
	section := readme[start+len("### Commands and exit codes\n\n"):]
	table := section[:strings.Index(section, "\n\n")+1]
	var want strings.Builder
	markdown(&want)
	if table != want.String() {
		t.Errorf("the README's commands table is not the usage table; paste `appliance help --markdown` there:\n%s", want.String())
	}
}
