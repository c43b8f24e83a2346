//go:build linux

// Command demo brings up a simulated three-cloud wgk3s cluster in network
// namespaces on this machine, narrates what happens, and tears it all down.
// It is what `make demo` runs; it needs root and touches nothing outside the
// namespaces it creates.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func main() {
	appliance := flag.String("appliance", "bin/appliance", "the appliance binary")
	standin := flag.String("k3s-standin", "bin/k3s-standin", "the stand-in k3s, used unless $WGK3S_K3S_BINARY names a real k3s")
	flag.Parse()
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces (try: sudo make demo)")
		os.Exit(1)
	}
	// The servers' processes run in other mount namespaces: absolute paths.
	for _, p := range []*string{appliance, standin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
		*p = abs
	}
	d := &demo{start: time.Now()}
	os.Exit(d.run(*appliance, *standin))
}

// demo narrates; its Script is the harness's T: a fatal error unwinds to
// run, which removes everything.
type demo struct {
	testnet.Script
	start time.Time
	net   *testnet.Net
}

func (d *demo) run(appliance, standin string) (code int) {
	// Ctrl-C still tears down.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("\ninterrupted")
		d.Teardown()
		os.Exit(130)
	}()
	if err := d.Do(func() { d.story(appliance, standin) }); err != nil {
		fmt.Printf("\nDEMO FAILED: %v\n", err)
		code = 1
	}
	fmt.Printf("\n== Tearing down: every namespace, process and file the demo made\n")
	d.Teardown()
	var left []string
	if d.net != nil {
		left = d.net.Leftovers()
	}
	if len(left) > 0 {
		fmt.Printf("   LEFT BEHIND: %v\n", left)
		return 1
	}
	fmt.Printf("   done, nothing left behind (%s in all)\n", time.Since(d.start).Round(time.Second))
	return code
}

func (d *demo) step(format string, args ...any) {
	fmt.Printf("\n== [%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "   " + strings.ReplaceAll(s, "\n", "\n   ")
}

func (d *demo) story(appliance, standin string) {
	if real := os.Getenv("WGK3S_K3S_BINARY"); real != "" {
		d.realStory(appliance, real)
		return
	}
	bins := testnet.Binaries{Appliance: appliance, K3s: standin}
	fmt.Printf("Using the stand-in k3s (%s): it is not Kubernetes; it listens on the master's wg address :6443\n"+
		"and agents join it with the token through the tunnel. Set WGK3S_K3S_BINARY to use a real k3s.\n", standin)

	d.step("Building a small internet from network namespaces")
	net := testnet.New(&d.Script)
	d.net = net
	dns := net.StartDNS()
	clouds := []struct{ cloud, name, role, addr string }{
		{"Tencent Cloud", "k3s-master", "master", "192.168.2.1"},
		{"Alibaba Cloud", "k3s-node-1", "agent", "192.168.2.2"},
		{"a third cloud", "k3s-node-2", "agent", "192.168.2.3"},
	}
	var nodes []*testnet.Node
	fmt.Printf("   %-14s %-11s %-16s %-12s %s\n", "CLOUD", "NODE", "PUBLIC (router)", "PRIVATE eth0", "WG ADDRESS")
	for i, c := range clouds {
		srv := net.AddServer(strings.TrimPrefix(c.name, "k3s-"), i+1)
		n := testnet.NewNode(&d.Script, srv, bins, c.name, c.role, c.addr)
		host := strings.TrimPrefix(c.name, "k3s-") + ".cloud.test"
		n.Endpoint = fmt.Sprintf("%s:%d", host, testnet.Port)
		dns.Set(host, srv.PublicIP)
		nodes = append(nodes, n)
		fmt.Printf("   %-14s %-11s %-16s %-12s %s\n", c.cloud, c.name, srv.PublicIP, srv.PrivateIP, c.addr)
	}
	fmt.Println("   Each server sits behind its provider's 1:1 NAT and only reaches the others over the \"internet\".")
	m, n1, n2 := nodes[0], nodes[1], nodes[2]

	d.step("One cluster file, identical on every node (keys were made with `appliance init`)")
	fmt.Println(indent(testnet.ClusterFile(nodes[:2], bins, nil)))

	d.step("What the master will do: `appliance check` (changes nothing)")
	for _, n := range nodes[:2] {
		n.WriteConfig(nodes[:2], nil)
	}
	fmt.Println(indent(m.Srv.Run(appliance, "check", "--config", testnet.ConfigPath)))

	d.step("Starting the appliance on the master and node-1, as systemd does")
	for _, n := range nodes[:2] {
		n.Start(&d.Script)
		fmt.Printf("   %s: %s\n", n.Name, logLine(n, "msg=running"))
	}
	m.PingUntil(&d.Script, n1.Address, 20*time.Second)
	fmt.Println(indent("wg show on the master:\n" + m.Srv.WgShow()))

	d.step("k3s: the agent joins the server through the tunnel")
	d.waitJoin(m, "k3s-node-1")
	fmt.Println(indent(m.Srv.Run(appliance, "status")))

	d.step("Adding node-2 with two commands: `appliance invite` on the master (it edits the file and reloads), `appliance join` on node-2")
	flow := m.Srv.Start("ping", "-n", "-q", "-c", "100", "-i", "0.05", "192.168.2.2")
	d.joinByInvite(appliance, m, n2)
	if !n1.Proc.WaitOutput("sync: took the master's cluster file", 10*time.Second) {
		d.Fatalf("node-1 did not take the master's file:\n%s", n1.Proc.Output())
	}
	fmt.Println("   node-1, untouched: " + lastLine(n1.Proc.Output(), "sync: took the master's cluster file"))
	n2.Start(&d.Script)
	d.waitJoin(m, "k3s-node-2")
	fmt.Println("   node-2: " + lastLine(n2.Proc.Output(), "sync: token written"))
	d.ownKey(n2)
	flow.Wait(20 * time.Second)
	fmt.Printf("   a ping master -> node-1 running through it all: %s\n", lossLine(flow.Output()))
	d.pingTable(nodes)

	d.step("A broken file on reload is rejected; the running cluster is untouched")
	m.Srv.WriteFile(testnet.ConfigPath, []byte(testnet.ClusterFile(nodes, bins, func(s string) string {
		return strings.Replace(strings.Replace(s, "mtu: 1420", "mtu: 99", 1), "address: 192.168.2.3", "address: 10.0.0.3", 1)
	})), 0o644)
	m.Reload(&d.Script, "reload rejected")
	for _, l := range strings.Split(m.Proc.Output(), "\n") {
		if strings.Contains(l, "reload rejected") {
			fmt.Println("   " + l[strings.Index(l, "msg="):])
		}
	}
	m.WriteConfig(nodes, nil)
	m.PingUntil(&d.Script, n2.Address, 10*time.Second)
	fmt.Println("   still answering: master -> node-2 ok")

	d.step("node-1's provider gives it a new public IP; its DNS name follows; the mesh follows")
	n1.Srv.SetPublicIP(netip.MustParseAddr("203.0.113.21"))
	dns.Set("node-1.cloud.test", n1.Srv.PublicIP)
	m.PingUntil(&d.Script, n1.Address, 60*time.Second)
	fmt.Println(indent("master's endpoints now:\n" + m.Srv.WgShow("endpoints")))

	d.step("Stopping: SIGTERM (systemctl stop) on every node")
	for _, n := range nodes {
		n.Stop(&d.Script)
		_, err := n.Srv.Try("ip", "link", "show", "wg0")
		fmt.Printf("   %s: stopped; wg0 present: %v; %s\n", n.Name, err == nil, logLine(n, "msg=\"k3s stopped\""))
	}
}

// joinByInvite adds n the two-command way: invite on the master, join
// on n's server (which starts with no key, no token and no file).
func (d *demo) joinByInvite(appliance string, m, n *testnet.Node) {
	for _, p := range []string{testnet.KeyPath, testnet.AgentTokenPath, testnet.ConfigPath} {
		os.Remove(n.Srv.HostPath(p))
	}
	cli := func(srv *testnet.Server, stdin string, args ...string) (string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := srv.Command(ctx, appliance, args...)
		var out, errb bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
		if err := cmd.Run(); err != nil {
			d.Fatalf("%s: appliance %s: %v\n%s%s", srv.Name, args[0], err, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	args := []string{"invite", n.Name, "--endpoint", n.Endpoint, "--address", n.Address}
	fmt.Printf("   master$ appliance %s\n", strings.Join(args, " "))
	out, errs := cli(m.Srv, "", append(args, "--config", testnet.ConfigPath)...)
	fmt.Println(indent(errs))
	code := strings.TrimPrefix(strings.TrimSpace(out), "appliance join ")
	fmt.Printf("      appliance join %s... (%d characters)\n", code[:20], len(code))
	fmt.Printf("   %s$ appliance join -   (the code on stdin)\n", strings.TrimPrefix(n.Name, "k3s-"))
	out, errs = cli(n.Srv, code+"\n", "join", "--config", testnet.ConfigPath, "--env-file", "/run/wgk3s/sysconfig-wgk3s", "-")
	fmt.Println(indent(errs + out))
	data, err := os.ReadFile(n.Srv.HostPath(testnet.KeyPath))
	if err != nil {
		d.Fatal(err)
	}
	if n.Key, err = wgtypes.ParseKey(strings.TrimSpace(string(data))); err != nil {
		d.Fatal(err)
	}
}

// ownKey waits until n replaced the join code's key with its own, and
// takes that key for the files the demo writes later.
func (d *demo) ownKey(n *testnet.Node) {
	const line = "join: this node's own key replaces the join code's"
	if !n.Proc.WaitOutput(line, 30*time.Second) {
		d.Fatalf("%s kept the code's key:\n%s", n.Name, n.Proc.Output())
	}
	fmt.Println("   " + strings.TrimPrefix(n.Name, "k3s-") + ": " + lastLine(n.Proc.Output(), line))
	data, err := os.ReadFile(n.Srv.HostPath(testnet.KeyPath))
	if err != nil {
		d.Fatal(err)
	}
	if n.Key, err = wgtypes.ParseKey(strings.TrimSpace(string(data))); err != nil {
		d.Fatal(err)
	}
}

func (d *demo) waitJoin(m *testnet.Node, node string) {
	ok := testnet.Eventually(30*time.Second, func() bool {
		b, _ := os.ReadFile(m.Srv.HostPath(testnet.StandinDir + "/events.log"))
		return strings.Contains(string(b), "server accepted "+node)
	})
	if !ok {
		d.Fatalf("%s did not join k3s:\n%s", node, m.Proc.Output())
	}
	fmt.Printf("   %s joined the k3s server at https://%s:6443\n", node, m.Address)
}

func (d *demo) pingTable(nodes []*testnet.Node) {
	fmt.Printf("   ping over wg0 (answered of 3):\n   %-12s", "from \\ to")
	for _, n := range nodes {
		fmt.Printf(" %-12s", n.Name)
	}
	fmt.Println()
	for _, from := range nodes {
		fmt.Printf("   %-12s", from.Name)
		for _, to := range nodes {
			cell := "-"
			if from != to {
				got, _ := from.Srv.Ping(to.Address, 3, 100*time.Millisecond)
				cell = fmt.Sprintf("%d/3", got)
			}
			fmt.Printf(" %-12s", cell)
		}
		fmt.Println()
	}
}

func logLine(n *testnet.Node, marker string) string {
	for _, l := range strings.Split(n.Proc.Output(), "\n") {
		if i := strings.Index(l, marker); i >= 0 {
			return l[i:]
		}
	}
	return ""
}

func lossLine(ping string) string {
	for _, l := range strings.Split(ping, "\n") {
		if strings.Contains(l, "packet loss") {
			return l
		}
	}
	return "no summary"
}

// lastLine returns the last log line containing s, from its msg= on.
func lastLine(out, s string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := lines[i]; strings.Contains(l, s) {
			if j := strings.Index(l, "msg="); j >= 0 {
				return l[j:]
			}
			return l
		}
	}
	return "(" + s + ": not logged)"
}
