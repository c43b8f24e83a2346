//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

const natSection = "Nodes behind NAT"

// natPaths measures two home nodes behind cone NATs with no endpoints, the
// master and the agent of the throughput pair (two relays): the
// time from a home node's start to the first ping the other answers and
// to a direct path, throughput and latency between them directly and,
// with the direct path blocked at a router, relayed, what relaying costs
// the relay, and the failovers (a direct path cut under traffic, the
// active relay's cloud cut off, a blocked path opened). With --before it
// measures the earlier appliance the same way, beside this one.
func (b *bench) natPaths() {
	if b.o.before != "" {
		b.natVariant("before: ", b.o.before)
	}
	b.natVariant("", b.o.appliance)
}

// natVariant measures with the appliance bin; the homes are clouds 24 and
// 25, lost at the end (the next variant makes them anew).
func (b *bench) natVariant(label, bin string) {
	bins := b.a.Bin
	bins.Appliance = bin
	master, agent := *b.a, *b.b
	master.Bin, agent.Bin = bins, bins
	m, r2 := &master, &agent
	hs1, hs2 := b.net.AddHome("home-1", 24, testnet.Cone), b.net.AddHome("home-2", 25, testnet.Cone)
	defer hs1.Destroy()
	defer hs2.Destroy()
	h1 := testnet.NewNode(&b.Script, hs1, bins, "home-1", "agent", "192.168.2.24")
	h2 := testnet.NewNode(&b.Script, hs2, bins, "home-2", "agent", "192.168.2.25")
	h1.Endpoint, h2.Endpoint = "", ""
	nodes := []*testnet.Node{m, h1, h2, r2}
	fast := func(s string) string {
		return strings.Replace(s, "persistent_keepalive: 25s", "persistent_keepalive: 5s", 1)
	}
	for _, n := range nodes {
		n.WriteConfig(nodes, fast)
	}
	for _, n := range []*testnet.Node{m, r2, h1} {
		n.StartWith(&b.Script, "NOTIFY_SOCKET=")
	}
	h1.PingUntil(&b.Script, m.Address, 20*time.Second)
	b.natStart(label, h1, h2)
	b.natThroughput(label, m, r2, h1, h2)
	for _, n := range []*testnet.Node{h2, h1, r2, m} {
		n.Stop(&b.Script)
	}
}

// natStart measures home-2's start to the first ping home-1 answers, and
// to a direct path.
func (b *bench) natStart(label string, h1, h2 *testnet.Node) {
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
	b.add(natSection, label+"home node start to first ping answered by another home node", fmt.Sprintf("%.0f ms", (first-float64(t0.UnixNano())/1e9)*1000),
		"both behind cone NATs, neither with an endpoint; one start")
	d := time.Since(t0) + b.pathWait(h2, h1.Name, func(p string) bool { return p == "direct" })
	b.add(natSection, label+"home node start to a direct path to another home node", fmt.Sprintf("%.1f s", d.Seconds()),
		"its status says direct: a handshake through both NATs")
}

// pathWait waits until n's path to peer satisfies ok.
func (b *bench) pathWait(n *testnet.Node, peer string, ok func(string) bool) time.Duration {
	began := time.Now()
	if !testnet.Eventually(60*time.Second, func() bool { return ok(benchPath(b, n, peer)) }) {
		b.Fatalf("%s reaches %s %q", n.Name, peer, benchPath(b, n, peer))
	}
	return time.Since(began)
}

func relayed(p string) bool { return strings.HasPrefix(p, "relayed via ") }

// natThroughput measures direct against relayed, the relay's CPU, and the
// failovers.
func (b *bench) natThroughput(label string, m, r2, h1, h2 *testnet.Node) {
	h2.Srv.Start("iperf3", "-s", "-i", "0", "--logfile", "/run/wgk3s/iperf3.log")
	testnet.Eventually(5*time.Second, func() bool { _, err := h2.Srv.Try("sh", "-c", "ss -ltn | grep -q :5201"); return err == nil })
	direct, _ := b.iperfFrom(h1, h2.Address, 1)
	rttDirect := pingRTT(b, h1, h2.Address)
	block := func(op string) {
		for _, dir := range []string{"-d", "-s"} {
			h2.Srv.RunRouter("iptables", "-w", op, "FORWARD", dir, h1.Srv.PublicIP.String(), "-j", "DROP")
		}
	}
	stop := benchFlow(b, h1, h2.Address, 50*time.Millisecond)
	block("-I")
	b.pathWait(h1, h2.Name, relayed)
	b.pathWait(h2, h1.Name, relayed)
	testnet.Eventually(20*time.Second, func() bool { got, _ := h1.Srv.Ping(h2.Address, 1, 100*time.Millisecond); return got == 1 })
	lost := stop()
	b.add(natSection, label+"a direct path cut under traffic: pings lost", fmt.Sprintf("%.1f s", lost.Seconds()),
		"ping every 50 ms from home-1 to home-2, the direct path dropped at home-2's router until the pair is relayed and answers")
	relay := m
	if via := strings.TrimPrefix(benchPath(b, h1, h2.Name), "relayed via "); via == r2.Name {
		relay = r2
	}
	if os.Getenv("WGK3S_BENCH_RELAY_PROFILE") != "" { // a CPU profile of the relay while it relays, printed
		f := filepath.Join(os.TempDir(), "wgk3s-relay-cpu.pprof")
		go getProfileFile(relay, "/debug/pprof/profile?seconds=8", f)
		b.iperfFrom(h1, h2.Address, 1)
		out, _ := exec.Command("go", "tool", "pprof", "-top", "-nodecount=35", f).CombinedOutput()
		fmt.Println(string(out))
	}
	cpu0 := cpuSeconds(relay.Proc.Pid())
	rel, bytes := b.iperfFrom(h1, h2.Address, 1)
	cpu := cpuSeconds(relay.Proc.Pid()) - cpu0
	rttRelayed := pingRTT(b, h1, h2.Address)
	b.add(natSection, label+"home to home, direct, 1 stream", mbit(direct), "")
	b.add(natSection, label+"home to home, relayed, 1 stream", mbit(rel), ratio(rel, direct)+" of direct, through "+relay.Name)
	b.add(natSection, label+"home to home RTT, direct", fmt.Sprintf("%.3f ms", rttDirect), "ping, average of 20")
	b.add(natSection, label+"home to home RTT, relayed", fmt.Sprintf("%.3f ms", rttRelayed), "")
	if bytes > 0 {
		b.add(natSection, label+"the relay's CPU per 100 Mbit/s relayed", fmt.Sprintf("%.1f %% of a core", cpu/(bytes/1e9)*0.0125*100),
			fmt.Sprintf("%.2f CPU-s per GB: the relay appliance's user+system time while relaying; 100 Mbit/s is 0.0125 GB/s", cpu/(bytes/1e9)))
	}
	b.relayFailover(label, relay, h1, h2)
	began := time.Now()
	block("-D")
	b.pathWait(h1, h2.Name, func(p string) bool { return p == "direct" })
	b.add(natSection, label+"a relayed path opened: direct again after", fmt.Sprintf("%.1f s", time.Since(began).Seconds()),
		"the block at home-2's router removed, until home-1's status says direct")
}

// relayFailover cuts the active relay's cloud off under traffic and
// measures what is lost until the homes answer through another relay.
func (b *bench) relayFailover(label string, relay, h1, h2 *testnet.Node) {
	stop := benchFlow(b, h1, h2.Address, 50*time.Millisecond)
	relay.Srv.SetUplink(false)
	ok := testnet.Eventually(30*time.Second, func() bool {
		got, _ := h1.Srv.Ping(h2.Address, 1, 100*time.Millisecond)
		return got == 1
	})
	lost := stop()
	relay.Srv.SetUplink(true)
	value := fmt.Sprintf("%.1f s", lost.Seconds())
	if !ok {
		value = "no other relay (30 s)"
	}
	b.add(natSection, label+"the active relay's cloud cut off under traffic: pings lost", value,
		"ping every 50 ms from home-1 to home-2, "+relay.Name+"'s uplink down until the homes answer again")
	testnet.Eventually(30*time.Second, func() bool { got, _ := h1.Srv.Ping(h2.Address, 1, 100*time.Millisecond); return got == 1 })
}

// benchFlow pings dst from n every interval until the returned stop,
// which says how long the pings lost after the first answer lasted.
func benchFlow(b *bench, n *testnet.Node, dst string, interval time.Duration) func() time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := n.Srv.Command(ctx, "ping", "-n", "-i", fmt.Sprintf("%.2f", interval.Seconds()), "-W", "1", dst)
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		b.Fatalf("ping: %v", err)
	}
	time.Sleep(500 * time.Millisecond) // a few answers before the event
	return func() time.Duration {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		cancel()
		seqs := map[int]bool{}
		first, sent := -1, 0
		for _, l := range strings.Split(out.String(), "\n") {
			if _, rest, ok := strings.Cut(l, "icmp_seq="); ok && strings.Contains(l, "bytes from") {
				var s int
				fmt.Sscanf(rest, "%d", &s)
				seqs[s] = true
				if first < 0 || s < first {
					first = s
				}
			}
			if strings.Contains(l, "packets transmitted") {
				fmt.Sscanf(l, "%d", &sent)
			}
		}
		lost := 0
		for s := max(first, 1); s <= sent; s++ {
			if !seqs[s] {
				lost++
			}
		}
		return time.Duration(lost) * interval
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
