//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/membership"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// cli runs an appliance command in srv with stdin and returns its stdout,
// stderr and exit code.
func cli(t *testing.T, srv *testnet.Server, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := srv.Command(ctx, applianceBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = cmd.ProcessState.ExitCode()
	}
	return out.String(), errb.String(), code
}

const envFile = "/run/wgk3s/sysconfig-wgk3s"

// joinNode runs `appliance join -` with code on a fresh server and returns
// the node it made, not started.
func joinNode(t *testing.T, srv *testnet.Server, name, address, code string) *node {
	t.Helper()
	if err := os.MkdirAll(srv.HostPath(standinDir), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errs, rc := cli(t, srv, code+"\n", "join", "--config", configPath, "--env-file", envFile, "-")
	if rc != 0 || !strings.Contains(out, "systemctl enable --now wgk3s") {
		t.Fatalf("join on %s: exit %d\n%s%s", srv.Name, rc, out, errs)
	}
	data, err := os.ReadFile(srv.HostPath(testnet.KeyPath))
	if err != nil {
		t.Fatal(err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if env, _ := os.ReadFile(srv.HostPath(envFile)); !strings.Contains(string(env), "ROLE=agent") {
		t.Errorf("join wrote %q to the env file", env)
	}
	return &node{Srv: srv, Bin: bins(), Name: name, Role: "agent", Address: address, Key: k}
}

func inviteCode(t *testing.T, m *node, args ...string) string {
	t.Helper()
	out, errs, rc := cli(t, m.Srv, "", append([]string{"invite", "--config", configPath}, args...)...)
	code, ok := strings.CutPrefix(strings.TrimSpace(out), "appliance join ")
	if rc != 0 || !ok {
		t.Fatalf("invite %v: exit %d\n%s%s", args, rc, out, errs)
	}
	return code
}

func TestInviteAndJoin(t *testing.T) {
	testnet.Requirements(t, "wg")
	net := testnet.New(t)
	m := newNode(t, net.AddServer("master", 1), "k3s-master", "master", "192.168.2.1")
	n1 := newNode(t, net.AddServer("node-1", 2), "k3s-node-1", "agent", "192.168.2.2")
	startAll(t, []*node{m, n1})
	pingUntil(t, m, n1.Address)
	srv3 := net.AddServer("node-3", 3)
	var n3 *node

	t.Run("invite on the master, join on a fresh server: node-3 pings every node within 30 s and follows the master's file", func(t *testing.T) {
		code := inviteCode(t, m, "k3s-node-3", "--endpoint", fmt.Sprintf("%s:%d", srv3.PublicIP, testnet.Port))
		if !strings.Contains(m.Proc.Output(), "msg=reloaded") {
			t.Errorf("the master did not reload on invite:\n%s", m.Proc.Output())
		}
		n3 = joinNode(t, srv3, "k3s-node-3", "192.168.2.3", code)
		began := time.Now()
		n3.Start(t)
		// A flow from node-1 across node-3's key switch: the switch is
		// make-before-break, so it loses at most what the promotion of the
		// new key takes.
		flow := n1.Srv.Start("ping", "-i", "0.02", "-c", "500", "-W", "1", "192.168.2.3")
		// The first answers come while the key switch may be under way
		// (the flow measures what that loses); 3 of 3 once it is done.
		for _, pair := range [][2]*node{{n3, m}, {n3, n1}, {m, n3}, {n1, n3}} {
			if !testnet.Eventually(30*time.Second, func() bool { got, _ := pair[0].Srv.Ping(pair[1].Address, 1, 200*time.Millisecond); return got == 1 }) {
				t.Fatalf("%s cannot reach %s within 30 s", pair[0].Name, pair[1].Address)
			}
		}
		t.Logf("timing: node-3 pings every node %.1f s after its appliance started", time.Since(began).Seconds())
		if !n3.Proc.WaitOutput("join: this node's own key replaces the join code's", 30*time.Second) {
			t.Fatalf("node-3 did not switch to its own key:\n%s", n3.Proc.Output())
		}
		for _, pair := range [][2]*node{{n3, m}, {n3, n1}, {m, n3}, {n1, n3}} {
			pair[0].PingUntil(t, pair[1].Address, 30*time.Second)
		}
		if !testnet.Eventually(30*time.Second, func() bool {
			master, _ := os.ReadFile(m.Srv.HostPath(configPath))
			got, _ := os.ReadFile(srv3.HostPath(configPath))
			return bytes.Equal(got, master)
		}) {
			master, _ := os.ReadFile(m.Srv.HostPath(configPath))
			got, _ := os.ReadFile(srv3.HostPath(configPath))
			t.Errorf("node-3's file is not the master's:\n%s\n--- master's:\n%s", got, master)
		}
		if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-3") }) {
			t.Errorf("node-3's k3s did not join:\n%s", events(m.Srv))
		}
		if tok, err := os.ReadFile(srv3.HostPath(agentTokenPath)); err != nil || strings.TrimSpace(string(tok)) != agentToken {
			t.Errorf("node-3's agent token = %q, %v", tok, err)
		}
		// At its first contact node-3 replaced the code's key with its own:
		// the master's file and every peer list have the new key, the code's
		// key is nowhere, and the invite is used.
		c, err := membership.Parse(code)
		if err != nil || c.Key == nil {
			t.Fatalf("the code: %v, %v", c, err)
		}
		old := c.Key.PublicKey().String()
		if !testnet.Eventually(30*time.Second, func() bool {
			k, _ := os.ReadFile(srv3.HostPath(testnet.KeyPath))
			return len(k) > 0 && strings.TrimSpace(string(k)) != c.Key.String()
		}) {
			t.Fatalf("node-3 still uses the code's key:\n%s", n3.Proc.Output())
		}
		data, _ := os.ReadFile(srv3.HostPath(testnet.KeyPath))
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		n3.Key = k
		for _, l := range strings.Split(n3.Proc.Output(), "\n") {
			if strings.Contains(l, "join:") {
				t.Logf("node-3: %s", l[strings.Index(l, "level="):])
			}
		}
		pub := k.PublicKey().String()
		for _, n := range []*node{m, n1} {
			n := n
			if !testnet.Eventually(30*time.Second, func() bool {
				peers := wgShow(t, n.Srv, "peers")
				file, _ := os.ReadFile(n.Srv.HostPath(configPath))
				return strings.Contains(peers, pub) && !strings.Contains(peers, old) && strings.Contains(string(file), pub)
			}) {
				t.Errorf("%s does not have node-3's own key in place of the code's:\n%s", n.Name, wgShow(t, n.Srv))
			}
		}
		for _, pair := range [][2]*node{{n3, m}, {n3, n1}, {m, n3}, {n1, n3}} {
			pair[0].PingUntil(t, pair[1].Address, 30*time.Second)
		}
		if !testnet.Eventually(30*time.Second, func() bool {
			master, _ := os.ReadFile(m.Srv.HostPath(configPath))
			got, _ := os.ReadFile(srv3.HostPath(configPath))
			return bytes.Equal(got, master) && strings.Contains(string(got), pub)
		}) {
			got, _ := os.ReadFile(srv3.HostPath(configPath))
			t.Errorf("after the key change node-3's file is not the master's:\n%s\n%s", got, n3.Proc.Output())
		}
		// The invite is used once the node's own key made its handshake
		// with the master, which looks every second while a key change is
		// under way.
		if !testnet.Eventually(10*time.Second, func() bool {
			_, err := os.Stat(m.Srv.HostPath("/run/wgk3s/invites.json"))
			return os.IsNotExist(err) && strings.Contains(m.Proc.Output(), "invite used: the node replaced the join code's key with its own")
		}) {
			t.Errorf("the master did not forget the used invite:\n%s", m.Proc.Output())
		}
		if _, err := os.Stat(srv3.HostPath(testnet.KeyPath + ".invited")); !os.IsNotExist(err) {
			t.Errorf("node-3 still marks its key as the invite's: %v", err)
		}
		flow.Wait(30 * time.Second)
		lost, answered := lostAfterFirstAnswer(flow.Output())
		t.Logf("timing: node-1 -> node-3 every 20 ms across node-3's key switch: %d lost after the first of %d answers", lost, answered)
		if answered == 0 || lost > 25 {
			t.Errorf("node-1 -> node-3 lost %d pings (20 ms apart) across the key switch, want at most 25 (0.5 s):\n%s", lost, flow.Output())
		}
		for _, n := range []*node{m, n1, n3} {
			if strings.Contains(n.Proc.Output(), "level=ERROR") {
				t.Errorf("%s logged an ERROR during the join:\n%s", n.Name, n.Proc.Output())
			}
		}
	})

	t.Run("remove node-3: it leaves, and nothing of it stays on the others", func(t *testing.T) {
		if n3 == nil {
			t.Skip("node-3 did not join")
		}
		if _, errs, rc := cli(t, m.Srv, "", "remove", "--config", configPath, "k3s-node-3"); rc != 0 {
			t.Fatalf("remove: exit %d: %s", rc, errs)
		}
		pub := n3.Key.PublicKey().String()
		for _, n := range []*node{m, n1} {
			n := n
			if !testnet.Eventually(30*time.Second, func() bool {
				file, _ := os.ReadFile(n.Srv.HostPath(configPath))
				return !strings.Contains(wgShow(t, n.Srv, "peers"), pub) && !strings.Contains(string(file), "k3s-node-3")
			}) {
				t.Errorf("%s still has node-3:\n%s", n.Name, wgShow(t, n.Srv))
			}
			if got, _ := n.Srv.Ping(n3.Address, 2, 200*time.Millisecond); got != 0 {
				t.Errorf("%s still reaches node-3's address", n.Name)
			}
		}
		n3.Stop(t)
	})

	t.Run("a code used on one machine stops the appliance of a second one, which changes nothing", func(t *testing.T) {
		code := inviteCode(t, m, "k3s-node-5", "--ttl", "20s")
		srv5 := net.AddServer("node-5", 5)
		n5 := joinNode(t, srv5, "k3s-node-5", "192.168.2.4", code)
		n5.Start(t)
		if !n5.Proc.WaitOutput("join: this node's own key replaces the join code's", 15*time.Second) {
			t.Fatalf("node-5 did not switch to its own key:\n%s", n5.Proc.Output())
		}
		// A second machine with the same code: the master no longer knows
		// the code's key, so nothing answers it; at the code's expiry it
		// stops with exit 1 and says what to do, having swapped nothing.
		srv6 := net.AddServer("node-6", 6)
		n6 := joinNode(t, srv6, "k3s-node-5", "192.168.2.4", code)
		codeKey, _ := os.ReadFile(srv6.HostPath(testnet.KeyPath))
		n6.Start(t)
		exited, err := n6.Proc.Wait(60 * time.Second)
		if !exited || err == nil {
			t.Fatalf("the second machine's appliance did not stop with an error (exited %v, %v):\n%s", exited, err, n6.Proc.Output())
		}
		out := n6.Proc.Output()
		if !strings.Contains(out, "it was used on another machine") || !strings.Contains(out, "appliance join --force") {
			t.Errorf("the second machine does not say the code was used and what to do:\n%s", out)
		}
		if k, _ := os.ReadFile(srv6.HostPath(testnet.KeyPath)); string(k) != string(codeKey) || strings.Contains(out, "join: this node's own key") {
			t.Errorf("the second machine changed its key:\n%s", out)
		}
		n5.Stop(t)
		if _, errs, rc := cli(t, m.Srv, "", "remove", "--config", configPath, "k3s-node-5"); rc != 0 {
			t.Fatalf("remove: exit %d: %s", rc, errs)
		}
	})

	t.Run("an expired code is refused, and the master drops its node at the next reload", func(t *testing.T) {
		code := inviteCode(t, m, "k3s-node-4", "--ttl", "2s")
		time.Sleep(2100 * time.Millisecond) // the code's own deadline, not a guess
		srv4 := net.AddServer("node-4", 4)
		out, errs, rc := cli(t, srv4, "", "join", "--config", configPath, "--env-file", envFile, code)
		if rc != 2 || !strings.Contains(errs, "expired at") {
			t.Errorf("join with an expired code: exit %d\n%s%s", rc, out, errs)
		}
		for _, p := range []string{configPath, testnet.KeyPath, envFile} {
			if _, err := os.Stat(srv4.HostPath(p)); err == nil {
				t.Errorf("the refused join wrote %s", p)
			}
		}
		m.Reload(t, "msg=reloaded")
		if !strings.Contains(m.Proc.Output(), "invite expired before the node's first handshake") {
			t.Errorf("no log line for the expired invite:\n%s", m.Proc.Output())
		}
		file, _ := os.ReadFile(m.Srv.HostPath(configPath))
		if strings.Contains(string(file), "k3s-node-4") || strings.Contains(wgShow(t, m.Srv, "allowed-ips"), "192.168.2.4/32") {
			t.Errorf("node-4 stays after its invite expired:\n%s", file)
		}
		if _, err := os.Stat(filepath.Join(m.Srv.HostPath("/run/wgk3s"), "invites.json")); !os.IsNotExist(err) {
			t.Errorf("invites.json left: %v", err)
		}
	})
}

// lostAfterFirstAnswer counts the pings of a ping's output missing after
// its first answer, up to its last one sent, and the answers.
func lostAfterFirstAnswer(out string) (lost, answered int) {
	seqs := map[int]bool{}
	first, last := -1, -1
	for _, l := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(l, "icmp_seq=")
		if !ok || !strings.Contains(l, "bytes from") {
			continue
		}
		var n int
		fmt.Sscanf(rest, "%d", &n)
		seqs[n] = true
		if first < 0 || n < first {
			first = n
		}
	}
	if first < 0 {
		return 0, 0
	}
	var sent int
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "packets transmitted") {
			fmt.Sscanf(l, "%d", &sent)
		}
	}
	last = sent
	for n := first; n <= last; n++ {
		if !seqs[n] {
			lost++
		}
	}
	return lost, len(seqs)
}
