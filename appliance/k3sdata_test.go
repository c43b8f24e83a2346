package appliance

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// A joined server's passwd whose agent entry is its server token (it
// joined without --agent-token-file) is set aside, so that k3s writes
// etcd's copy back instead of refusing to start; one that holds the
// agent token is left alone.
func TestAlignPasswd(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "agent-token")
	if err := os.WriteFile(token, []byte("agent-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(dir, "server", "cred", "passwd")
	log := slog.New(slog.DiscardHandler)
	if err := alignPasswd(dir, token, log); err != nil {
		t.Fatalf("no passwd yet: %v", err)
	}
	os.MkdirAll(filepath.Dir(passwd), 0o700)
	for _, c := range []struct {
		data string
		kept bool
	}{
		{"server-secret,server,server,k3s:server\nagent-secret,node,node,k3s:agent\n", true},
		{"server-secret,server,server,k3s:server\nserver-secret,node,node,k3s:agent\n", false},
	} {
		os.Remove(passwd + promotedSuffix)
		if err := os.WriteFile(passwd, []byte(c.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := alignPasswd(dir, token, log); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(passwd)
		_, aside := os.Stat(passwd + promotedSuffix)
		if kept := err == nil; kept != c.kept || (aside == nil) == c.kept {
			t.Errorf("%q: kept %v (set aside: %v), want kept %v", c.data, kept, aside == nil, c.kept)
		}
	}
	if got := agentPassword("K10abc::node:pw"); got != "pw" {
		t.Errorf("agentPassword of a full token: %q", got)
	}
}
