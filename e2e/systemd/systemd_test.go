//go:build linux

// Package systemd installs the .deb in Debian containers booted with a real
// systemd (systemd-nspawn) inside the simulated clouds, and drives the
// service the way an operator does: start, status, reload, crash, stop,
// boot, upgrade, removal. `make systemd-test` runs it (WGK3S_SYSTEMD_TEST=1);
// elsewhere it skips.
package systemd

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func requirements(t *testing.T) {
	t.Helper()
	if os.Getenv("WGK3S_SYSTEMD_TEST") != "1" {
		t.Skip("boots systemd containers: run `make systemd-test` (or set WGK3S_SYSTEMD_TEST=1)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for systemd-nspawn and network namespaces")
	}
	for _, tool := range []string{"systemd-nspawn", "mmdebstrap", "nsenter", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install systemd-container mmdebstrap; make deps does it)", tool)
		}
	}
	testnet.Requirements(t)
}

// build makes the .deb at version and the static stand-in k3s.
func build(t *testing.T, dir, version string) string {
	t.Helper()
	cmd := exec.Command("../../rpm/build.sh", "deb", filepath.Join(dir, version))
	cmd.Env = append(os.Environ(), "VERSION="+version, "RELEASE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("building the .deb %s: %v\n%s", version, err, out)
	}
	return strings.TrimSpace(string(out))
}

type node struct {
	*container
	name, role, address string
	key                 wgtypes.Key
}

func (n *node) entry() string {
	s := fmt.Sprintf("  - name: %s\n    role: %s\n    address: %s\n    public_key: %q\n", n.name, n.role, n.address, n.key.PublicKey())
	if n.container != nil {
		s += fmt.Sprintf("    endpoint: %s:5418\n", n.srv.PublicIP)
	}
	return s
}

func clusterFile(nodes []*node, mtu int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "network: 192.168.2.0/24\ninterface:\n  listen_port: 5418\n  mtu: %d\nnodes:\n", mtu)
	for _, n := range nodes {
		b.WriteString(n.entry())
	}
	b.WriteString("k3s:\n  binary: /usr/local/bin/k3s\n  stop_grace_period: 5s\n")
	return b.String()
}

func (n *node) report(t *testing.T) status.Report {
	t.Helper()
	var r status.Report
	if err := json.Unmarshal([]byte(n.run("appliance", "status", "--json")), &r); err != nil {
		t.Fatalf("%s: appliance status --json: %v", n.name, err)
	}
	return r
}

func (n *node) pingUntil(t *testing.T, dst string) {
	t.Helper()
	if !poll.Until(30*time.Second, func() bool { _, err := n.try("ping", "-c", "1", "-W", "1", dst); return err == nil }) {
		t.Fatalf("%s cannot reach %s over wg0:\n%s", n.name, dst, n.run("journalctl", "-u", "wgk3s", "--no-pager"))
	}
}

func (n *node) active() string {
	out, _ := n.try("systemctl", "is-active", "wgk3s")
	return strings.TrimSpace(out)
}

func TestPackageUnderSystemd(t *testing.T) {
	requirements(t)
	tar := rootfs(t)
	pkgs := t.TempDir()
	deb := build(t, pkgs, "0.1.0")
	debNext := build(t, pkgs, "0.1.1")
	standin := filepath.Join(pkgs, "k3s")
	if out, err := exec.Command("go", "build", "-o", standin, "github.com/wgk3s/wgk3s/internal/k3sstandin").CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in: %v\n%s", err, out)
	}
	standinBin, err := os.ReadFile(standin)
	if err != nil {
		t.Fatal(err)
	}
	debData, _ := os.ReadFile(deb)
	debNextData, _ := os.ReadFile(debNext)

	net := testnet.New(t)
	master := &node{name: "k3s-master", role: "master", address: "192.168.2.1"}
	node1 := &node{name: "k3s-node-1", role: "agent", address: "192.168.2.2"}
	for i, n := range []*node{master, node1} {
		srv := net.AddServer(strings.TrimPrefix(n.name, "k3s-"), i+1)
		n.container = newContainer(t, tar, srv, fmt.Sprintf("wgk3s-%d-%s", os.Getpid()%100000, strings.TrimPrefix(n.name, "k3s-")))
		n.write("/root/wgk3s.deb", debData, 0o644)
		n.write("/root/wgk3s-next.deb", debNextData, 0o644)
		n.write("/usr/local/bin/k3s", standinBin, 0o755)
		n.boot()
	}
	nodes := []*node{master, node1}

	t.Run("install", func(t *testing.T) {
		for _, n := range nodes {
			n.run("dpkg", "-i", "/root/wgk3s.deb")
			if st := n.run("dpkg", "-s", "wgk3s"); !strings.Contains(st, "Depends: iptables") {
				t.Errorf("%s: dpkg -s:\n%s", n.name, st)
			}
			if n.active() == "active" {
				t.Fatalf("%s: installing started the service", n.name)
			}
			args := []string{"init", "--name", n.name, "--address", n.address, "--endpoint", n.srv.PublicIP.String() + ":5418"}
			if n.role == "master" {
				args = append(args, "--role", "master")
			}
			n.run("appliance", args...)
			k, err := wgtypes.ParseKey(strings.TrimSpace(n.read("/etc/wgk3s/private.key")))
			if err != nil {
				t.Fatal(err)
			}
			n.key = k
		}
		// node-1 fetches the agent token over wg0 (sync); it never holds the
		// server token.
		master.sh("sed -i 's/^ROLE=.*/ROLE=master/' /etc/sysconfig/wgk3s")
		for _, n := range nodes {
			n.write("/etc/wgk3s.yaml", []byte(clusterFile(nodes, 1420)), 0o644)
			n.run("appliance", "check", "--config", "/etc/wgk3s.yaml")
		}
	})
	forwardBefore := master.run("cat", "/proc/sys/net/ipv4/ip_forward")
	for _, kill := range []string{"bin/kill", "usr/bin/kill"} {
		if _, err := os.Stat(filepath.Join(master.dir, kill)); err == nil {
			t.Fatalf("the rootfs has /%s: it would hide an ExecReload that needs it", kill)
		}
	}

	t.Run("start returns once wg0 and the rules are up", func(t *testing.T) {
		for _, n := range nodes {
			n.run("systemctl", "start", "wgk3s")
			// Right when start returns (READY=1 was sent): active, wg0, rules.
			if got := n.active(); got != "active" {
				t.Errorf("%s: %s right after start", n.name, got)
			}
			n.run("ip", "link", "show", "wg0")
			if !strings.Contains(n.run("iptables-save"), "-j WGK3S-INPUT") {
				t.Errorf("%s: no rules when start returned", n.name)
			}
			if st, _ := n.try("systemctl", "status", "wgk3s", "--no-pager"); !strings.Contains(st, "Status: \"wg0 "+n.address+" up") {
				t.Errorf("%s: systemctl status lacks the STATUS= line:\n%s", n.name, st)
			}
		}
		master.pingUntil(t, "192.168.2.2")
		node1.pingUntil(t, "192.168.2.1")
	})

	t.Run("journal holds k3s's lines", func(t *testing.T) {
		if !poll.Until(20*time.Second, func() bool {
			out, _ := master.try("journalctl", "-u", "wgk3s", "--no-pager")
			return strings.Contains(out, "component=k3s") && strings.Contains(out, "standin k3s server")
		}) {
			t.Errorf("journalctl -u wgk3s has no component=k3s lines:\n%s", master.run("journalctl", "-u", "wgk3s", "--no-pager"))
		}
	})

	t.Run("reload adds a node with no packet lost", func(t *testing.T) {
		k, _ := wgtypes.GeneratePrivateKey()
		node2 := &node{name: "k3s-node-2", role: "agent", address: "192.168.2.3", key: k}
		flow := make(chan string, 1)
		go func() { out, _ := master.try("ping", "-i", "0.05", "-c", "100", "-W", "1", "192.168.2.2"); flow <- out }()
		time.Sleep(time.Second) // the flow runs across the reloads
		for _, n := range nodes {
			n.write("/etc/wgk3s.yaml", []byte(clusterFile([]*node{master, node1, node2}, 1420)), 0o644)
			n.run("systemctl", "reload", "wgk3s")
		}
		out := <-flow
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("the flow lost packets across the reloads:\n%s", out)
		}
		if r := master.report(t); len(r.Peers) != 2 {
			t.Errorf("master has %d peers after the reload, want 2", len(r.Peers))
		}
	})

	t.Run("a reload with a broken file fails and changes nothing", func(t *testing.T) {
		good := master.read("/etc/wgk3s.yaml")
		master.write("/etc/wgk3s.yaml", []byte(strings.Replace(good, "mtu: 1420", "mtu: 99", 1)), 0o644)
		if out, err := master.try("systemctl", "reload", "wgk3s"); err == nil {
			t.Errorf("systemctl reload of a broken file succeeded:\n%s", out)
		}
		if got := master.active(); got != "active" {
			t.Errorf("the service is %s after a rejected reload", got)
		}
		if !strings.Contains(master.run("ip", "link", "show", "wg0"), "mtu 1420") {
			t.Error("the rejected file was applied")
		}
		master.pingUntil(t, "192.168.2.2")
		master.write("/etc/wgk3s.yaml", []byte(good), 0o644)
	})

	t.Run("a SIGKILL is restarted: each rule once, one k3s", func(t *testing.T) {
		before := master.show("NRestarts")
		// The main process, as a crash would: k3s goes with it (parent-death
		// signal). Killing the whole cgroup is refused inside nspawn here
		// ("Failed to send signal SIGKILL to auxiliary processes").
		master.run("systemctl", "kill", "-s", "KILL", "--kill-who=main", "wgk3s")
		if !poll.Until(60*time.Second, func() bool { return master.show("NRestarts") != before && master.active() == "active" }) {
			t.Fatalf("not restarted (NRestarts %s -> %s, %s)", before, master.show("NRestarts"), master.active())
		}
		master.pingUntil(t, "192.168.2.2")
		save := master.run("iptables-save")
		for _, chain := range []string{"WGK3S-INPUT", "WGK3S-FORWARD", "WGK3S-POSTROUTING"} {
			if n := strings.Count(save, "-j "+chain); n != 1 {
				t.Errorf("%d jumps to %s after the restart", n, chain)
			}
		}
		k3s := func() string {
			out, _ := master.try("sh", "-c", "for p in /proc/[0-9]*; do readlink $p/exe; done | grep -c '^/usr/local/bin/k3s$'")
			return strings.TrimSpace(out)
		}
		if !poll.Until(20*time.Second, func() bool { return k3s() == "1" }) {
			t.Errorf("%s k3s processes after the restart, want 1", k3s())
		}
	})

	t.Run("stop removes wg0 and the rules and restores the sysctls", func(t *testing.T) {
		master.run("systemctl", "stop", "wgk3s")
		if _, err := master.try("ip", "link", "show", "wg0"); err == nil {
			t.Error("wg0 outlived the stop")
		}
		if save := master.run("iptables-save"); strings.Contains(save, "WGK3S") || strings.Contains(save, "wgk3s") {
			t.Errorf("rules outlived the stop:\n%s", save)
		}
		if got := master.run("cat", "/proc/sys/net/ipv4/ip_forward"); got != forwardBefore {
			t.Errorf("ip_forward %s after stop, %s before start", got, forwardBefore)
		}
	})

	t.Run("enabled, it is up after a reboot", func(t *testing.T) {
		master.run("systemctl", "enable", "wgk3s")
		oldInit := master.init
		master.try("systemctl", "reboot")
		if !master.waitExit(60 * time.Second) {
			t.Fatalf("the container did not go down for the reboot:\n%s", master.output())
		}
		master.boot()
		if master.init == oldInit {
			t.Fatal("the container did not reboot")
		}
		if !poll.Until(60*time.Second, func() bool { return master.active() == "active" }) {
			t.Fatalf("not active after the reboot: %s\n%s", master.active(), master.run("journalctl", "-b", "-u", "wgk3s", "--no-pager"))
		}
		master.pingUntil(t, "192.168.2.2")
	})

	t.Run("an upgrade restarts the service and keeps the edited file", func(t *testing.T) {
		edited := master.read("/etc/wgk3s.yaml") + "# edited by the operator\n"
		master.write("/etc/wgk3s.yaml", []byte(edited), 0o644)
		pid := master.show("MainPID")
		master.run("dpkg", "-i", "--force-confold", "/root/wgk3s-next.deb")
		if v := master.run("dpkg-query", "-W", "-f", "${Version}", "wgk3s"); v != "0.1.1-1" {
			t.Errorf("version after the upgrade: %q", v)
		}
		if !poll.Until(60*time.Second, func() bool { return master.active() == "active" && master.show("MainPID") != pid }) {
			t.Errorf("not restarted by the upgrade: MainPID %s -> %s, %s", pid, master.show("MainPID"), master.active())
		}
		if got := master.read("/etc/wgk3s.yaml"); got != edited {
			t.Error("the upgrade replaced the edited /etc/wgk3s.yaml")
		}
		if out := master.run("appliance", "version"); !strings.Contains(out, "0.1.1") {
			t.Errorf("appliance version after the upgrade: %s", out)
		}
		master.pingUntil(t, "192.168.2.2")
	})

	t.Run("removal stops and disables it", func(t *testing.T) {
		master.run("dpkg", "-r", "wgk3s")
		if got := master.active(); got == "active" {
			t.Error("still active after removal")
		}
		if out, _ := master.try("systemctl", "is-enabled", "wgk3s"); strings.TrimSpace(out) == "enabled" {
			t.Error("still enabled after removal")
		}
		if _, err := master.try("ip", "link", "show", "wg0"); err == nil {
			t.Error("wg0 outlived the removal")
		}
	})
}
