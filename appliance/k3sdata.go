package appliance

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
)

// alignPasswd sets a joined server's server/cred/passwd aside when its
// agent entry ("node") is not the agent token: a server that joined
// without --agent-token-file (the appliance before this fix) wrote its
// server token there, and k3s refuses to start again with a copy that
// differs from etcd's and is newer ("passwd newer than datastore").
// Without the file, k3s writes etcd's copy back, which holds the agent
// token the server now gives it too.
func alignPasswd(dataDir, agentTokenFile string, log *slog.Logger) error {
	passwd := filepath.Join(dataDir, "server", "cred", "passwd")
	data, err := os.ReadFile(passwd)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a server that has not joined yet
	}
	if err != nil {
		return err
	}
	token, err := configs.ReadToken(agentTokenFile)
	if err != nil {
		return err
	}
	if node, ok := passwdEntry(string(data), "node"); !ok || node == agentPassword(token) {
		return nil
	}
	if err := os.Rename(passwd, passwd+promotedSuffix); err != nil {
		return fmt.Errorf("setting aside %s, whose agent entry is not the agent token (k3s would refuse to start): %w", passwd, err)
	}
	log.Warn("set k3s's passwd aside: its agent entry was not the agent token (a server that joined without it); k3s writes etcd's copy back", "file", passwd, "kept_as", passwd+promotedSuffix)
	return nil
}

// passwdEntry is the password of user name in k3s's passwd
// ("password,name,name,role" lines).
func passwdEntry(data, name string) (string, bool) {
	for _, line := range strings.Split(data, "\n") {
		f := strings.Split(strings.TrimSpace(line), ",")
		if len(f) >= 2 && f[1] == name {
			return f[0], true
		}
	}
	return "", false
}

// agentPassword is the password k3s keeps for a token: a full token
// ("K10<hash>::node:<password>") keeps its last part.
func agentPassword(token string) string {
	const prefix = "::node:"
	if i := strings.Index(token, prefix); i > 0 && strings.HasPrefix(token, "K10") {
		return token[i+len(prefix):]
	}
	return token
}
