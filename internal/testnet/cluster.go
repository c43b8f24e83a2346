//go:build linux

package testnet

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Paths inside every server. /run/wgk3s is each server's own tmpfs, so the
// cluster file is identical on every node, as in production.
const (
	ConfigPath = "/run/wgk3s/wgk3s.yaml"
	KeyPath    = "/run/wgk3s/private.key"
	TokenPath  = "/run/wgk3s/token"
	// Token is the k3s server token, in the master's token file.
	Token = "e2e-server-token-5f1c9a"
	// AgentTokenPath holds the k3s agent token, on every node.
	AgentTokenPath = "/run/wgk3s/agent-token"
	// AgentToken is the k3s agent token.
	AgentToken = "e2e-agent-token-83d2b0"
	// SnapshotDir is where each node keeps the master's snapshots.
	SnapshotDir = "/run/wgk3s/snapshots"
	// StandinDir is where the stand-in k3s records itself.
	StandinDir = "/run/wgk3s/standin"
	// Port is WireGuard's UDP port on every node.
	Port = 5418
)

// Binaries are the programs a cluster runs, and the WireGuard mode it runs
// them in.
type Binaries struct {
	Appliance string
	K3s       string // the stand-in, or a real k3s
	// Mode is interface.mode in the cluster file: auto, kernel or
	// userspace ("" is auto). Tests name the mode they check.
	Mode string
}

// Node is one cluster member on one simulated server.
type Node struct {
	Srv      *Server
	Bin      Binaries
	Name     string
	Role     string // master or agent
	Address  string // wg0 address
	Endpoint string // host:port as written in the file; "" for none
	Key      wgtypes.Key
	Proc     *Proc // the running appliance
	// StopWithin bounds Stop's wait for the exit (default 15 s); a VM
	// under software emulation needs longer.
	StopWithin time.Duration
}

// NewNode makes a node on srv: a fresh key pair, the key and token files
// in the server's /run/wgk3s (the server token on the master only, the
// agent token everywhere), and an endpoint at its public address.
func NewNode(t T, srv *Server, bin Binaries, name, role, address string) *Node {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Srv: srv, Bin: bin, Name: name, Role: role, Address: address, Key: k,
		Endpoint: fmt.Sprintf("%s:%d", srv.PublicIP, Port)}
	srv.WriteFile(KeyPath, []byte(k.String()+"\n"), 0o600)
	if role == "master" {
		srv.WriteFile(TokenPath, []byte(Token+"\n"), 0o600)
	}
	srv.WriteFile(AgentTokenPath, []byte(AgentToken+"\n"), 0o600)
	if err := os.MkdirAll(srv.HostPath(StandinDir), 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// ClusterFile renders the one cluster file for nodes, running bin; edit,
// if not nil, changes the text (to set an MTU, break the file, ...).
func ClusterFile(nodes []*Node, bin Binaries, edit func(string) string) string {
	mode := bin.Mode
	if mode == "" {
		mode = "auto"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "network: 192.168.2.0/24\ninterface:\n  listen_port: %d\n  mtu: 1420\n  mode: %s\n", Port, mode)
	fmt.Fprintf(&b, "  private_key_file: %s\n  persistent_keepalive: 25s\nnodes:\n", KeyPath)
	for _, n := range nodes {
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: %s\n    public_key: %q\n", n.Name, n.Role, n.Address, n.Key.PublicKey().String())
		if n.Endpoint != "" {
			fmt.Fprintf(&b, "    endpoint: %s\n", n.Endpoint)
		}
	}
	// Each server's own /run, not the host's /var/lib/wgk3s.
	fmt.Fprintf(&b, "snapshots:\n  dir: %s\n", SnapshotDir)
	fmt.Fprintf(&b, "k3s:\n  binary: %s\n  token_file: %s\n  agent_token_file: %s\n  stop_grace_period: 5s\n", bin.K3s, TokenPath, AgentTokenPath)
	s := b.String()
	if edit != nil {
		s = edit(s)
	}
	return s
}

// WriteConfig writes the cluster file for nodes on this node's server.
func (n *Node) WriteConfig(nodes []*Node, edit func(string) string) {
	n.Srv.WriteFile(ConfigPath, []byte(ClusterFile(nodes, n.Bin, edit)), 0o644)
}

// Start runs the appliance the way systemd does and waits until it runs.
// Its environment carries a NOTIFY_SOCKET and a K3S_TOKEN, which k3s must
// never see.
func (n *Node) Start(t T) {
	t.Helper()
	n.StartWith(t, "NOTIFY_SOCKET=/nonexistent")
}

// StartWith is Start with more environment variables.
func (n *Node) StartWith(t T, env ...string) {
	t.Helper()
	args := append([]string{"WGK3S_STANDIN_DIR=" + StandinDir, "K3S_TOKEN=" + Token}, env...)
	args = append(args, n.Bin.Appliance, "--role", n.Role, "--config", ConfigPath)
	n.Proc = n.Srv.Start("env", args...)
	if !n.Proc.WaitOutput("msg=running", 30*time.Second) {
		t.Fatalf("%s did not start:\n%s", n.Name, n.Proc.Output())
	}
}

// Reload sends SIGHUP and waits for the log line want that it produces.
func (n *Node) Reload(t T, want string) {
	t.Helper()
	before := strings.Count(n.Proc.Output(), want)
	if err := n.Proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !Eventually(15*time.Second, func() bool { return strings.Count(n.Proc.Output(), want) > before }) {
		t.Fatalf("%s: no %q after SIGHUP:\n%s", n.Name, want, n.Proc.Output())
	}
}

// Stop sends SIGTERM and requires a clean exit within StopWithin.
func (n *Node) Stop(t T) {
	t.Helper()
	within := n.StopWithin
	if within == 0 {
		within = 15 * time.Second
	}
	n.Proc.Signal(syscall.SIGTERM)
	exited, err := n.Proc.Wait(within)
	if !exited || err != nil {
		t.Fatalf("%s: SIGTERM: exited %v within %s, err %v\n%s", n.Name, exited, within, err, n.Proc.Output())
	}
}

// PingUntil waits up to timeout until dst answers a ping from n, then
// requires 3 of 3.
func (n *Node) PingUntil(t T, dst string, timeout time.Duration) {
	t.Helper()
	if !Eventually(timeout, func() bool { got, _ := n.Srv.Ping(dst, 1, 200*time.Millisecond); return got == 1 }) {
		t.Fatalf("%s cannot reach %s over wg0 within %v\n%s", n.Name, dst, timeout, n.Srv.WgShow())
	}
	if got, out := n.Srv.Ping(dst, 3, 200*time.Millisecond); got != 3 {
		t.Fatalf("%s -> %s: %d of 3 answered\n%s", n.Name, dst, got, out)
	}
}

// WgShow runs `wg show wg0 <what>` in the server.
func (s *Server) WgShow(what ...string) string {
	return s.Run("wg", append([]string{"show", "wg0"}, what...)...)
}

// Handshake returns the latest-handshake epoch of peer on s ("0" if none,
// "" if no such peer).
func (s *Server) Handshake(peer wgtypes.Key) string {
	for _, line := range strings.Split(s.WgShow("latest-handshakes"), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == peer.String() {
			return f[1]
		}
	}
	return ""
}
