//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

const natSection = "Nodes behind NAT"

// natPaths measures two home nodes behind cone NATs with no endpoints,
// and the master (the throughput pair's): the time from a home node's
// start to the first ping the other answers, then throughput and latency
// between them directly and, with the direct path blocked at a router,
// through the master, and what relaying costs the master.
func (b *bench) natPaths() {
	bins := b.a.Bin
	// Clouds 1 and 2 are the throughput pair, 3 to 23 the sync section's.
	h1 := testnet.NewNode(&b.Script, b.net.AddHome("home-1", 24, testnet.Cone), bins, "home-1", "agent", "192.168.2.24")
	h2 := testnet.NewNode(&b.Script, b.net.AddHome("home-2", 25, testnet.Cone), bins, "home-2", "agent", "192.168.2.25")
	h1.Endpoint, h2.Endpoint = "", ""
	nodes := []*testnet.Node{b.a, h1, h2}
	fast := func(s string) string {
		return strings.Replace(s, "persistent_keepalive: 25s", "persistent_keepalive: 5s", 1)
	}
	for _, n := range nodes {
		n.WriteConfig(nodes, fast)
	}
	b.a.StartWith(&b.Script, "NOTIFY_SOCKET=")
	h1.StartWith(&b.Script, "NOTIFY_SOCKET=")
	h1.PingUntil(&b.Script, b.a.Address, 20*time.Second)

	// As in startToFirstPacket: until wg0 exists, each ping fails at once.
	h2.Srv.Run("ip", "route", "add", "unreachable", "192.168.2.0/24", "metric", "9999")
	probe := `end=$((SECONDS+30)); while [ $SECONDS -lt $end ]; do ping -n -c 1 -W 1 ` + h1.Address +
		` >/dev/null 2>&1 && { date +%s.%N; exit 0; }; done; exit 1`
	loop := h2.Srv.Start("bash", "-c", probe)
	time.Sleep(200 * time.Millisecond) // the loop runs before the appliance starts
	t0 := time.Now()
	h2.StartWith(&b.Script, "NOTIFY_SOCKET=")
	exited, err := loop.Wait(40 * time.Second)
	first, perr := strconv.ParseFloat(strings.TrimSpace(loop.Output()), 64)
	if !exited || err != nil || perr != nil {
		b.Fatalf("home-2 got no answer from home-1 within 30 s of its start (%v)\n%s", err, h2.Proc.Output())
	}
	h2.Srv.Run("ip", "route", "del", "unreachable", "192.168.2.0/24", "metric", "9999")
	b.add(natSection, "home node start to first ping answered by another home node", fmt.Sprintf("%.0f ms", (first-float64(t0.UnixNano())/1e9)*1000),
		"both behind cone NATs, neither with an endpoint; one start")
	pathWait := func(n *testnet.Node, peer, want string) time.Duration {
		began := time.Now()
		if !testnet.Eventually(60*time.Second, func() bool { return benchPath(b, n, peer) == want }) {
			b.Fatalf("%s reaches %s %q, want %q", n.Name, peer, benchPath(b, n, peer), want)
		}
		return time.Since(began)
	}
	d := time.Since(t0)
	d += pathWait(h2, h1.Name, "direct")
	b.add(natSection, "home node start to a direct path to another home node", fmt.Sprintf("%.1f s", d.Seconds()),
		"its status says direct: a handshake through both NATs")

	h2.Srv.Start("iperf3", "-s", "-i", "0", "--logfile", "/run/wgk3s/iperf3.log")
	testnet.Eventually(5*time.Second, func() bool { _, err := h2.Srv.Try("sh", "-c", "ss -ltn | grep -q :5201"); return err == nil })
	direct, _ := b.iperfFrom(h1, h2.Address, 1)
	rttDirect := pingRTT(b, h1, h2.Address)

	block := func(op string) {
		for _, dir := range []string{"-d", "-s"} {
			h2.Srv.RunRouter("iptables", "-w", op, "FORWARD", dir, h1.Srv.PublicIP.String(), "-j", "DROP")
		}
	}
	block("-I")
	pathWait(h1, h2.Name, "relayed via k3s-master")
	pathWait(h2, h1.Name, "relayed via k3s-master")
	cpu0 := cpuSeconds(b.a.Proc.Pid())
	relayed, bytes := b.iperfFrom(h1, h2.Address, 1)
	cpu := cpuSeconds(b.a.Proc.Pid()) - cpu0
	rttRelayed := pingRTT(b, h1, h2.Address)
	block("-D")

	b.add(natSection, "home to home, direct, 1 stream", mbit(direct), "")
	b.add(natSection, "home to home, relayed through the master, 1 stream", mbit(relayed), ratio(relayed, direct)+" of direct")
	b.add(natSection, "home to home RTT, direct", fmt.Sprintf("%.3f ms", rttDirect), "ping, average of 20")
	b.add(natSection, "home to home RTT, relayed", fmt.Sprintf("%.3f ms", rttRelayed), "")
	if bytes > 0 {
		b.add(natSection, "master's CPU s per GB relayed", fmt.Sprintf("%.2f", cpu/(bytes/1e9)), "the master appliance's user+system time while relaying")
		b.add(natSection, "master's CPU per 100 Mbit/s relayed", fmt.Sprintf("%.1f %% of a core", cpu/(bytes/1e9)*0.0125*100),
			"from the line above: 100 Mbit/s is 0.0125 GB/s")
	}
	for _, n := range []*testnet.Node{h2, h1, b.a} {
		n.Stop(&b.Script)
	}
}

// benchPath is how n reaches peer, from its status.
func benchPath(b *bench, n *testnet.Node, peer string) string {
	out, err := n.Srv.Try(b.o.appliance, "status", "--json")
	if err != nil {
		return ""
	}
	var r status.Report
	if json.Unmarshal([]byte(out), &r) != nil {
		return ""
	}
	path, _ := r.PathTo(peer)
	return path
}

var rttAvgRE = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)

// pingRTT is the average RTT of 20 pings from n to dst, in ms.
func pingRTT(b *bench, n *testnet.Node, dst string) float64 {
	out := n.Srv.Run("ping", "-n", "-q", "-c", "20", "-i", "0.05", dst)
	m := rttAvgRE.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no RTT in:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
