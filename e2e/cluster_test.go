package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Paths inside every server; /run/wgk3s is each server's own tmpfs, so the
// cluster file can be identical on every node, as in production.
const (
	configPath = "/run/wgk3s/wgk3s.yaml"
	keyPath    = "/run/wgk3s/private.key"
	tokenPath  = "/run/wgk3s/token"
	token      = "K10e2e-cluster-secret"
	// standinDir is where the stand-in k3s records itself.
	standinDir = "/run/wgk3s/standin"
)

// node is one cluster member on one simulated server.
type node struct {
	srv      *testnet.Server
	name     string
	role     string
	address  string // wg0 address
	endpoint string // host:port, "" for none
	key      wgtypes.Key
	proc     *testnet.Proc
}

func newNode(t *testing.T, srv *testnet.Server, name, role, address string) *node {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{srv: srv, name: name, role: role, address: address, key: k,
		endpoint: srv.PublicIP.String() + ":5418"}
	srv.WriteFile(keyPath, []byte(k.String()+"\n"), 0o600)
	srv.WriteFile(tokenPath, []byte(token+"\n"), 0o600)
	if err := os.MkdirAll(srv.HostPath(standinDir), 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// clusterFile renders the cluster file for nodes; edit, if not nil, changes
// the text (to set an MTU, break the file, ...).
func clusterFile(nodes []*node, edit func(string) string) string {
	var b strings.Builder
	b.WriteString("network: 192.168.2.0/24\ninterface:\n  listen_port: 5418\n  mtu: 1420\n  mode: auto\n")
	fmt.Fprintf(&b, "  private_key_file: %s\n  persistent_keepalive: 25s\nnodes:\n", keyPath)
	for _, n := range nodes {
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: %s\n    public_key: %q\n", n.name, n.role, n.address, n.key.PublicKey().String())
		if n.endpoint != "" {
			fmt.Fprintf(&b, "    endpoint: %s\n", n.endpoint)
		}
	}
	fmt.Fprintf(&b, "k3s:\n  binary: %s\n  token_file: %s\n  stop_grace_period: 5s\n", k3sBin, tokenPath)
	s := b.String()
	if edit != nil {
		s = edit(s)
	}
	return s
}

func (n *node) writeConfig(nodes []*node, edit func(string) string) {
	n.srv.WriteFile(configPath, []byte(clusterFile(nodes, edit)), 0o644)
}

// start runs the appliance the way systemd does and waits until it runs.
// Its environment carries a NOTIFY_SOCKET and a K3S_TOKEN, which k3s must
// never see.
func (n *node) start(t *testing.T) {
	t.Helper()
	n.startWith(t, "NOTIFY_SOCKET=/nonexistent")
}

// startWith is start with more environment variables.
func (n *node) startWith(t *testing.T, env ...string) {
	t.Helper()
	args := append([]string{"WGK3S_STANDIN_DIR=" + standinDir, "K3S_TOKEN=" + token}, env...)
	args = append(args, applianceBin, "--role", n.role, "--config", configPath)
	n.proc = n.srv.Start("env", args...)
	if !n.proc.WaitOutput("msg=running", 20*time.Second) {
		t.Fatalf("%s did not start:\n%s", n.name, n.proc.Output())
	}
}

// reload sends SIGHUP and waits for the outcome line it produces.
func (n *node) reload(t *testing.T, want string) {
	t.Helper()
	before := strings.Count(n.proc.Output(), want)
	if err := n.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(10*time.Second, func() bool { return strings.Count(n.proc.Output(), want) > before }) {
		t.Fatalf("%s: no %q after SIGHUP:\n%s", n.name, want, n.proc.Output())
	}
}

// stop sends SIGTERM and requires a clean exit within 10 s.
func (n *node) stop(t *testing.T) {
	t.Helper()
	n.proc.Signal(syscall.SIGTERM)
	exited, err := n.proc.Wait(10 * time.Second)
	if !exited || err != nil {
		t.Fatalf("%s: SIGTERM: exited %v, err %v\n%s", n.name, exited, err, n.proc.Output())
	}
}

// pingUntil waits until dst answers a ping from n, then requires 3 of 3.
func pingUntil(t *testing.T, n *node, dst string) {
	t.Helper()
	if !testnet.Eventually(15*time.Second, func() bool { got, _ := n.srv.Ping(dst, 1, 200*time.Millisecond); return got == 1 }) {
		t.Fatalf("%s cannot reach %s over wg0", n.name, dst)
	}
	if got, out := n.srv.Ping(dst, 3, 200*time.Millisecond); got != 3 {
		t.Fatalf("%s -> %s: %d of 3 answered\n%s", n.name, dst, got, out)
	}
}

// wgShow runs `wg show wg0 <what>` in the node's namespaces.
func wgShow(t *testing.T, srv *testnet.Server, what ...string) string {
	t.Helper()
	return srv.Run("wg", append([]string{"show", "wg0"}, what...)...)
}

// handshake returns peer's latest-handshake epoch on srv ("0" if none).
func handshake(t *testing.T, srv *testnet.Server, peer wgtypes.Key) string {
	t.Helper()
	for _, line := range strings.Split(wgShow(t, srv, "latest-handshakes"), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == peer.String() {
			return f[1]
		}
	}
	return ""
}
