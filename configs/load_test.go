package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// writeCluster writes a cluster file whose two nodes use real key pairs and
// whose secret files live in a temp dir. It returns the file path and the
// private keys by node name.
type fixture struct {
	dir, path, keyFile, tokenFile, agentTokenFile string
	keys                                          map[string]wgtypes.Key
}

func newFixture(t *testing.T, self string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), keys: map[string]wgtypes.Key{}}
	f.keyFile = filepath.Join(f.dir, "private.key")
	f.tokenFile = filepath.Join(f.dir, "token")
	f.agentTokenFile = filepath.Join(f.dir, "agent-token")
	for _, n := range []string{"k3s-master", "k3s-node-1"} {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		f.keys[n] = k
	}
	body := strings.NewReplacer(
		keyA, f.keys["k3s-master"].PublicKey().String(),
		keyB, f.keys["k3s-node-1"].PublicKey().String(),
		"interface:\n", "interface:\n  private_key_file: "+f.keyFile+"\n",
		"k3s:\n", "k3s:\n  token_file: "+f.tokenFile+"\n  agent_token_file: "+f.agentTokenFile+"\n",
	).Replace(base)
	f.path = filepath.Join(f.dir, "wgk3s.yaml")
	mustWrite(t, f.path, body, 0o644)
	if self != "" {
		mustWrite(t, f.keyFile, f.keys[self].String()+"\n", 0o600)
	}
	mustWrite(t, f.tokenFile, "secret-token\n", 0o600)
	mustWrite(t, f.agentTokenFile, "agent-secret\n", 0o600)
	return f
}

func mustWrite(t *testing.T, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadFindsSelfByKey(t *testing.T) {
	for _, self := range []string{"k3s-master", "k3s-node-1"} {
		f := newFixture(t, self)
		cfg, err := Load(f.path, Options{})
		if err != nil {
			t.Fatalf("%s: %v", self, err)
		}
		if cfg.Self.Name != self {
			t.Errorf("self = %q, want %q", cfg.Self.Name, self)
		}
		if cfg.PrivateKey.Key() != f.keys[self] {
			t.Errorf("%s: private key not loaded", self)
		}
		if len(cfg.Peers()) != 1 || cfg.Peers()[0].Name == self {
			t.Errorf("%s: peers = %+v", self, cfg.Peers())
		}
	}
}

func TestLoadRoleAndNode(t *testing.T) {
	f := newFixture(t, "k3s-node-1")
	if _, err := Load(f.path, Options{Role: RoleAgent, Node: "k3s-node-1"}); err != nil {
		t.Fatalf("matching --role and --node rejected: %v", err)
	}
	tests := []struct {
		name         string
		opts         Options
		field, wants string
	}{
		{"role disagrees", Options{Role: RoleMaster}, "nodes[1].role", "--role master, but this node (k3s-node-1) is agent"},
		{"unknown node", Options{Node: "k3s-node-9"}, "nodes", `--node "k3s-node-9" names no node`},
		{"node key mismatch", Options{Node: "k3s-master"}, "nodes[0].public_key", "does not match this node's private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(f.path, tt.opts)
			var es Errors
			if !errors.As(err, &es) || find(es, tt.field, tt.wants) == nil {
				t.Fatalf("want %s: %q, got:\n%v", tt.field, tt.wants, err)
			}
		})
	}
}

func TestLoadSecretFiles(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(f *fixture)
		field  string
		want   string
		fix    string
	}{
		{"key missing", func(f *fixture) { os.Remove(f.keyFile) }, "interface.private_key_file", "does not exist", "appliance init"},
		{"key world readable", func(f *fixture) { os.Chmod(f.keyFile, 0o644) }, "interface.private_key_file", "readable by group or others", "chmod 600 "},
		{"key garbage", func(f *fixture) { os.WriteFile(f.keyFile, []byte("hunter2"), 0o600) }, "interface.private_key_file", "does not hold a WireGuard private key", "appliance genkey"},
		{"key is a dir", func(f *fixture) { os.Remove(f.keyFile); os.Mkdir(f.keyFile, 0o700) }, "interface.private_key_file", "not a regular file", "regular file"},
		{"token missing", func(f *fixture) { os.Remove(f.tokenFile) }, "k3s.token_file", "does not exist", "appliance init --role master"},
		{"token group readable", func(f *fixture) { os.Chmod(f.tokenFile, 0o640) }, "k3s.token_file", "readable by group or others", "chmod 600 "},
		{"token empty", func(f *fixture) { os.WriteFile(f.tokenFile, nil, 0o600) }, "k3s.token_file", "is empty", "appliance init"},
		{"token K10 without hash", func(f *fixture) { os.WriteFile(f.tokenFile, []byte("K10e2e-cluster-secret\n"), 0o600) }, "k3s.token_file", `has no "::"`, "K10<64 hex digits>::server:<password>"},
		{"token K10 short hash", func(f *fixture) { os.WriteFile(f.tokenFile, []byte("K10abc::server:pw\n"), 0o600) }, "k3s.token_file", "must be 64 hex digits", "bare password"},
		{"token K10 no password", func(f *fixture) { os.WriteFile(f.tokenFile, []byte("K10::server:\n"), 0o600) }, "k3s.token_file", "<user>:<password>", "bare password"},
		{"token inner space", func(f *fixture) { os.WriteFile(f.tokenFile, []byte("abc def\n"), 0o600) }, "k3s.token_file", "white space", "bare password"},
		{"token huge", func(f *fixture) { os.WriteFile(f.tokenFile, make([]byte, 20<<20), 0o600) }, "k3s.token_file", "longer than a k3s token", "appliance init"},
		{"agent token bad", func(f *fixture) { os.WriteFile(f.agentTokenFile, []byte("K10zz\n"), 0o600) }, "k3s.agent_token_file", "k3s would refuse", "bare password"},
		{"agent token group readable", func(f *fixture) { os.Chmod(f.agentTokenFile, 0o640) }, "k3s.agent_token_file", "readable by group", "chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "k3s-master")
			tt.mutate(f)
			_, err := Load(f.path, Options{Role: RoleMaster})
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %v, want Errors", err)
			}
			fe := find(es, tt.field, tt.want)
			if fe == nil {
				t.Fatalf("want %s: %q, got:\n%v", tt.field, tt.want, err)
			}
			if !strings.Contains(fe.Fix, tt.fix) {
				t.Errorf("fix %q does not mention %q", fe.Fix, tt.fix)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "secret-token") {
				t.Errorf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), Options{})
	if err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadReportsFileAndSchemaProblemsTogether(t *testing.T) {
	f := newFixture(t, "k3s-master")
	os.Chmod(f.keyFile, 0o644)
	body, _ := os.ReadFile(f.path)
	mustWrite(t, f.path, strings.Replace(string(body), "mtu: 1420", "mtu: 1", 1), 0o644)
	_, err := Load(f.path, Options{})
	if err == nil || !strings.Contains(err.Error(), "interface.mtu") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("want both the mtu and the key file reported, got:\n%v", err)
	}
}

func TestPrivateKeyNeverPrints(t *testing.T) {
	f := newFixture(t, "k3s-master")
	cfg, err := Load(f.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := f.keys["k3s-master"].String()
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", cfg.PrivateKey), fmt.Sprintf("%s", cfg.PrivateKey)} {
		if strings.Contains(s, secret) {
			t.Fatalf("private key printed: %s", s)
		}
	}
}

// TestLoadRefusesWhatIsNotARegularFile: /dev/zero, a FIFO and a directory
// are refused at once with the kind named; a file over the limit too.
func TestLoadRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	f, _ := os.Create(big)
	f.Truncate(MaxFileSize + 1)
	f.Close()
	for path, want := range map[string]string{
		"/dev/zero": "a character device, not a regular file",
		fifo:        "a named pipe (FIFO), not a regular file",
		dir:         "a directory, not a regular file",
		big:         "a cluster file is at most 16 MiB",
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(path, Options{}); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "must be a regular file of at most 16 MiB") {
				t.Errorf("Load(%s) = %v, want %q", path, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Load(%s) hangs", path)
		}
	}
}

// TestTokenProblem reads tokens the way k3s's parseToken does.
func TestTokenProblem(t *testing.T) {
	hash := strings.Repeat("ab12", 16)
	for tok, ok := range map[string]bool{
		"0123456789abcdef0123456789abcdef":          true, // appliance init
		"K10" + hash + "::server:pw":                true,
		"K10" + strings.ToUpper(hash) + "::node:pw": true,
		"K10::server:pw":                            true,
		"K10" + hash + "::abcdef.0123456789abcdef":  true,
		"K10e2e-cluster-secret":                     false,
		"K10" + hash[:10] + "::server:pw":           false,
		"K10" + hash + "::server:":                  false,
		"K10" + hash + "::pw":                       false,
		"K10" + strings.Repeat("zz", 32) + "::s:pw": false,
		"a b": false,
		"":    false,
	} {
		if got := TokenProblem(tok) == ""; got != ok {
			t.Errorf("TokenProblem(%q) = %q; want accepted=%v", tok, TokenProblem(tok), ok)
		}
	}
}

// TestAgentTokens: an agent needs the agent token only; a syncing agent
// may start without it (it fetches it); the master may start without it
// (it creates it).
func TestAgentTokens(t *testing.T) {
	f := newFixture(t, "k3s-node-1")
	os.Remove(f.tokenFile)
	if _, err := Load(f.path, Options{}); err != nil {
		t.Fatalf("an agent without the server token: %v", err)
	}
	os.Remove(f.agentTokenFile)
	if _, err := Load(f.path, Options{}); err != nil {
		t.Fatalf("a syncing agent without the agent token: %v", err)
	}
	body, _ := os.ReadFile(f.path)
	mustWrite(t, f.path, string(body)+"sync: false\n", 0o644)
	_, err := Load(f.path, Options{})
	var es Errors
	if !errors.As(err, &es) || find(es, "k3s.agent_token_file", "does not exist") == nil || !strings.Contains(err.Error(), "copy the master's") {
		t.Fatalf("an agent without sync and without the agent token: %v", err)
	}
	m := newFixture(t, "k3s-master")
	os.Remove(m.agentTokenFile)
	if _, err := Load(m.path, Options{}); err != nil {
		t.Fatalf("a master without the agent token (it creates it): %v", err)
	}
}
