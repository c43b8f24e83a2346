//go:build linux

package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// bigCluster returns the real two nodes plus n-2 more, which have keys and
// addresses but no endpoint (they are never contacted).
func (b *bench) bigCluster(n int) []*testnet.Node {
	nodes := []*testnet.Node{b.a, b.b}
	for i := 2; i < n; i++ {
		k, _ := wgtypes.GeneratePrivateKey()
		nodes = append(nodes, &testnet.Node{Name: fmt.Sprintf("node-%d", i), Role: "agent",
			Address: fmt.Sprintf("192.168.%d.%d", 10+i/250, i%250+1), Key: k})
	}
	return nodes
}

var wide = func(s string) string {
	return strings.Replace(s, "network: 192.168.2.0/24", "network: 192.168.0.0/16", 1)
}

var tookRE = regexp.MustCompile(`msg=reloaded .* took=(\S+)`)

func (b *bench) scale() {
	pair := []*testnet.Node{b.a, b.b}
	// Idle with one peer each (two nodes).
	for _, n := range pair {
		n.WriteConfig(pair, wide)
		n.StartWith(&b.Script, "NOTIFY_SOCKET=")
	}
	b.b.PingUntil(&b.Script, b.a.Address, 20*time.Second)
	time.Sleep(3 * time.Second) // idle: let start-up garbage be collected
	rss2, hwm2 := rssKiB(b.a.Proc.Pid())
	b.a.Stop(&b.Script)

	// The master with the big cluster.
	big := b.bigCluster(b.o.bigCluster)
	b.a.WriteConfig(big, wide)
	b.a.StartWith(&b.Script, "NOTIFY_SOCKET=")
	b.b.PingUntil(&b.Script, b.a.Address, 30*time.Second)
	time.Sleep(3 * time.Second)
	rssN, hwmN := rssKiB(b.a.Proc.Pid())
	perPeer := (rssN - rss2) * 1024 / float64(len(big)-2)
	const s = "Memory"
	b.add(s, "RSS idle, 2 nodes (1 peer)", mib(rss2), fmt.Sprintf("peak %s", mib(hwm2)))
	b.add(s, fmt.Sprintf("RSS idle, %d nodes", len(big)), mib(rssN), fmt.Sprintf("peak %s", mib(hwmN)))
	b.add(s, "bytes per extra peer", fmt.Sprintf("%.0f B", perPeer), "(RSS difference) / extra peers; goal < 40 KiB")

	// Reload adding one node at a time while node-1 pings the master.
	const s2 = "Reload"
	var took []float64
	lost := 0
	for i := 0; i < b.o.reloads; i++ {
		big = append(big, b.bigCluster(len(big) + 1)[len(big)])
		flow := b.b.Srv.Start("ping", "-n", "-q", "-i", "0.01", "-c", "300", b.a.Address)
		time.Sleep(time.Second)
		b.a.WriteConfig(big, wide)
		b.a.Reload(&b.Script, "msg=reloaded")
		flow.Wait(10 * time.Second)
		lost += 300 - testnet.Received(flow.Output())
		ms := tookRE.FindAllStringSubmatch(b.a.Proc.Output(), -1)
		d, err := time.ParseDuration(ms[len(ms)-1][1])
		if err != nil {
			b.Fatalf("reload duration: %v", err)
		}
		took = append(took, d.Seconds())
	}
	b.a.Stop(&b.Script)
	b.b.Stop(&b.Script)
	b.add(s2, fmt.Sprintf("SIGHUP adding 1 node to a %d-node cluster: apply time", b.o.bigCluster), fmt.Sprintf("%.1f ms", median(took)*1000),
		fmt.Sprintf("median of %d, from the log's took=; goal < 100 ms", len(took)))
	b.add(s2, "ping packets lost meanwhile (10 ms interval)", strconv.Itoa(lost), fmt.Sprintf("of %d; goal 0", 300*len(took)))
	b.planBenchmark()
}

// planBenchmark runs the Go benchmark that validates and plans a 1000-node file.
func (b *bench) planBenchmark() {
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", "^BenchmarkPlan1000$", "-benchmem", "-benchtime", "20x", "./appliance").CombinedOutput()
	if err != nil {
		b.Fatalf("go test -bench: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`BenchmarkPlan1000\S*\s+\d+\s+(\d+) ns/op\s+(\d+) B/op`).FindStringSubmatch(string(out))
	if m == nil {
		b.Fatalf("no benchmark line:\n%s", out)
	}
	ns, _ := strconv.ParseFloat(m[1], 64)
	bytes, _ := strconv.ParseFloat(m[2], 64)
	b.add("Reload", "validate and plan a 1000-node file", fmt.Sprintf("%.1f ms", ns/1e6), fmt.Sprintf("%.1f MiB allocated; go test -bench BenchmarkPlan1000 ./appliance", bytes/(1<<20)))
}
