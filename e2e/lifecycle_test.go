//go:build linux

package e2e

import (
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// notifySocket stands in for systemd's: it collects sd_notify datagrams.
type notifySocket struct {
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T, srv *testnet.Server, path string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: srv.HostPath(path), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ns := &notifySocket{}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, string(buf[:n]))
			ns.mu.Unlock()
		}
	}()
	return ns
}

// states returns the first line (READY=1, RELOADING=1, ...) of each message.
func (ns *notifySocket) states() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	var out []string
	for _, m := range ns.msgs {
		out = append(out, strings.SplitN(m, "\n", 2)[0])
	}
	return out
}

func (ns *notifySocket) waitFor(t *testing.T, want ...string) {
	t.Helper()
	if !testnet.Eventually(10*time.Second, func() bool { return strings.Join(ns.states(), " ") == strings.Join(want, " ") }) {
		ns.mu.Lock()
		defer ns.mu.Unlock()
		t.Fatalf("sd_notify messages = %q, want states %q", ns.msgs, want)
	}
}

func statusJSON(t *testing.T, n *node) status.Report {
	t.Helper()
	out := n.Srv.Run(applianceBin, "status", "--json")
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s: status --json: %v\n%s", n.Name, err, out)
	}
	return r
}

func TestLifecycle(t *testing.T) {
	_, m, n1 := twoClouds(t)
	nodes := []*node{m, n1}
	for _, n := range nodes {
		n.WriteConfig(nodes, nil)
	}
	notify := listenNotify(t, m.Srv, "/run/wgk3s/notify.sock")
	m.StartWith(t, "NOTIFY_SOCKET=/run/wgk3s/notify.sock")
	n1.Start(t)
	notify.waitFor(t, "READY=1")
	pingUntil(t, m, "192.168.2.2")

	t.Run("status reports what wg show and the k3s child say", func(t *testing.T) {
		if !testnet.Eventually(20*time.Second, func() bool { return strings.Contains(events(m.Srv), "server accepted k3s-node-1") }) {
			t.Fatal("agent did not join")
		}
		r := statusJSON(t, m)
		if r.Node != "k3s-master" || r.Role != "master" || r.Mode != mode || r.Address != "192.168.2.1/24" {
			t.Errorf("report header = %+v", r)
		}
		if len(r.Peers) != 1 {
			t.Fatalf("peers = %+v", r.Peers)
		}
		p := r.Peers[0]
		wgEpoch, _ := strconv.ParseInt(handshake(t, m.Srv, n1.Key.PublicKey()), 10, 64)
		if p.Name != "k3s-node-1" || p.PublicKey != n1.Key.PublicKey().String() || !p.Reachable {
			t.Errorf("peer = %+v", p)
		}
		if d := p.LatestHandshake.Unix() - wgEpoch; d < -1 || d > 1 {
			t.Errorf("status handshake %v, wg show %d", p.LatestHandshake, wgEpoch)
		}
		if !strings.Contains(wgShow(t, m.Srv, "endpoints"), p.Endpoint) || p.ReceiveBytes == 0 || p.TransmitBytes == 0 {
			t.Errorf("peer endpoint/bytes = %+v\n%s", p, wgShow(t, m.Srv))
		}
		recs := records(t, m.Srv)
		if !r.K3s.Running || r.K3s.PID != recs[len(recs)-1].PID || r.K3s.Restarts != 0 || r.K3s.Args[0] != "server" {
			t.Errorf("k3s = %+v, stand-in record pid %d", r.K3s, recs[len(recs)-1].PID)
		}
		human := m.Srv.Run(applianceBin, "status")
		for _, want := range []string{"k3s-node-1", "203.0.113.20:5418", "running, pid", "yes"} {
			if !strings.Contains(human, want) {
				t.Errorf("status lacks %q:\n%s", want, human)
			}
		}
	})

	t.Run("a reload during a reload is queued, and status answers meanwhile", func(t *testing.T) {
		// A peer whose DNS name takes 2 s to fail makes the reload slow:
		// the resolver is an address on the server's LAN where no host answers.
		m.Srv.SetResolvConf("nameserver 10.1.1.99\noptions timeout:2 attempts:1\n")
		slow := &node{Name: "k3s-node-3", Role: "agent", Address: "192.168.2.4", Endpoint: "slow.example.net:5418"}
		slow.Key, _ = wgtypes.GeneratePrivateKey()
		m.WriteConfig([]*node{m, n1, slow}, nil)
		count := func(s string) int { return strings.Count(m.Proc.Output(), s) }
		m.Proc.Signal(syscall.SIGHUP)
		if !testnet.Eventually(5*time.Second, func() bool { return count("msg=reloading") == 1 }) {
			t.Fatal("first reload did not start")
		}
		m.Proc.Signal(syscall.SIGHUP) // arrives while the first reload waits for DNS
		began := time.Now()
		if r := statusJSON(t, m); r.Node != "k3s-master" {
			t.Errorf("status during a reload = %+v", r)
		}
		if took := time.Since(began); took > time.Second {
			t.Errorf("status took %v during a reload", took)
		}
		if count("msg=reloaded") != 0 {
			t.Fatal("test bug: the first reload finished before the second SIGHUP; it was not slow")
		}
		if !testnet.Eventually(20*time.Second, func() bool { return count("msg=reloaded") == 2 }) {
			t.Fatalf("%d of 2 reloads ran:\n%s", count("msg=reloaded"), m.Proc.Output())
		}
		// One at a time: reloading, reloaded, reloading, reloaded.
		var seq []string
		for _, l := range strings.Split(m.Proc.Output(), "\n") {
			if strings.Contains(l, "msg=reloading") || strings.Contains(l, "msg=reloaded") {
				seq = append(seq, strings.Fields(l)[2])
			}
		}
		if strings.Join(seq, " ") != "msg=reloading msg=reloaded msg=reloading msg=reloaded" {
			t.Errorf("reloads overlapped: %v", seq)
		}
		notify.waitFor(t, "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1")
		if r := statusJSON(t, m); r.Reloads.Total != 2 || r.Reloads.Failures != 0 || len(r.Peers) != 2 {
			t.Errorf("after the reloads: reloads %+v, %d peers", r.Reloads, len(r.Peers))
		}
		if !strings.Contains(m.Proc.Output(), "endpoint does not resolve") {
			t.Errorf("the unresolvable endpoint was not logged")
		}
		m.WriteConfig(nodes, nil)
		m.Reload(t, "msg=reloaded")
	})

	t.Run("a second appliance on the same node fails and leaves the first alone", func(t *testing.T) {
		before := iptablesSave(t, m.Srv, "nft")
		out, err := m.Srv.Try(applianceBin, "--role", "master", "--config", configPath)
		if err == nil || !strings.Contains(out, "another running appliance") {
			t.Fatalf("second appliance: err %v\n%s", err, out)
		}
		if after := iptablesSave(t, m.Srv, "nft"); after != before {
			t.Errorf("the failed second start changed the rules")
		}
		pingUntil(t, m, "192.168.2.2")
	})

	t.Run("SIGTERM removes wg0, the rules and k3s", func(t *testing.T) {
		pid := statusJSON(t, m).K3s.PID
		m.Stop(t)
		notify.waitFor(t, "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1")
		// (three reloads above: two queued ones and the one restoring the file)
		if out, err := m.Srv.Try("ip", "link", "show", "wg0"); err == nil {
			t.Errorf("wg0 still exists:\n%s", out)
		}
		if owned := ownedRules(iptablesSave(t, m.Srv, "nft")); len(owned) != 0 {
			t.Errorf("rules left: %v", owned)
		}
		if processExists(pid) {
			t.Errorf("k3s %d still exists", pid)
		}
		if _, err := os.Stat(m.Srv.HostPath(status.DefaultSocket)); !os.IsNotExist(err) {
			t.Errorf("status socket left: %v", err)
		}
	})
}

func TestMetricsEndpoint(t *testing.T) {
	_, m, n1 := twoClouds(t)
	nodes := []*node{m, n1}
	metrics := func(s string) string { return s + "metrics:\n  enabled: true\n" }
	for _, n := range nodes {
		n.WriteConfig(nodes, metrics)
		n.Start(t)
	}
	pingUntil(t, m, "192.168.2.2")
	// bash's /dev/tcp: no HTTP client needs to be installed in the namespace.
	get := `exec 3<>/dev/tcp/127.0.0.1/9586; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3`
	out := m.Srv.Run("bash", "-c", get)
	for _, want := range []string{`wgk3s_peer_reachable{peer="k3s-node-1"} 1`, `wgk3s_wireguard_mode{mode="` + mode + `"} 1`, "wgk3s_k3s_restarts_total 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
	if out, err := n1.Srv.Try("bash", "-c", strings.Replace(get, "127.0.0.1", "192.168.2.1", 1)); err == nil {
		t.Errorf("metrics answered on the wg address, want loopback only:\n%s", out)
	}
}

// TestReloadCommand: `appliance reload` (systemd's ExecReload) waits for
// the reload and fails with the reason when the file is rejected.
func TestReloadCommand(t *testing.T) {
	_, m, n1 := twoClouds(t)
	startAll(t, []*node{m, n1})
	m.WriteConfig([]*node{m, n1}, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 99", 1) })
	code, out := exitCode(t, m.Srv, "reload")
	if code != 1 || !strings.Contains(out, "reload rejected, the running configuration is unchanged") || !strings.Contains(out, "interface.mtu: 99 is out of range") {
		t.Errorf("a broken file: exit %d:\n%s", code, out)
	}
	m.WriteConfig([]*node{m, n1}, func(s string) string { return strings.Replace(s, "mtu: 1420", "mtu: 1400", 1) })
	code, out = exitCode(t, m.Srv, "reload")
	if code != 0 || strings.TrimSpace(out) != "reloaded" {
		t.Errorf("a good file: exit %d:\n%s", code, out)
	}
	if got := m.Srv.Run("ip", "link", "show", "wg0"); !strings.Contains(got, "mtu 1400") {
		t.Errorf("the reload did not apply:\n%s", got)
	}
	if r := statusJSON(t, m); r.Reloads.Total != 2 || r.Reloads.Failures != 1 {
		t.Errorf("reloads = %+v", r.Reloads)
	}
}
