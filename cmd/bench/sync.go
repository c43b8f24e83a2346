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

// logTime reads the time= of the last log line of out that contains s.
func logTime(out, s string) (time.Time, bool) {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := lines[i]; strings.Contains(l, s) && strings.HasPrefix(l, "time=") {
			t, err := time.Parse(time.RFC3339Nano, strings.Fields(l)[0][len("time="):])
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// syncSpread measures, for N agents in their own clouds, the time from the
// master's reload to the last agent having applied the master's new file;
// then the master's cost of 1000 waiting agents (simulated, loopback).
func (b *bench) syncSpread() {
	sizes := []int{2, 20}
	if b.o.smoke {
		sizes = []int{2}
	}
	bins := b.a.Bin
	// Cloud numbers 1 and 2 are the throughput pair; the simulated internet
	// has room for 25 clouds, so the clusters of each size share servers.
	master := testnet.NewNode(&b.Script, b.net.AddServer("sync-m", 3), bins, "sync-master", "master", "192.168.3.1")
	var agents []*testnet.Node
	for _, n := range sizes {
		for i := len(agents); i < n; i++ {
			agents = append(agents, testnet.NewNode(&b.Script, b.net.AddServer(fmt.Sprintf("sync-%d", i), 4+i), bins,
				fmt.Sprintf("sync-agent-%d", i), "agent", fmt.Sprintf("192.168.3.%d", i+2)))
		}
		nodes := append([]*testnet.Node{master}, agents[:n]...)
		onNet3 := func(s string) string {
			return strings.Replace(s, "network: 192.168.2.0/24", "network: 192.168.3.0/24", 1)
		}
		for _, nd := range nodes {
			nd.WriteConfig(nodes, onNet3)
			nd.StartWith(&b.Script, "NOTIFY_SOCKET=")
		}
		for _, nd := range nodes[1:] {
			nd.PingUntil(&b.Script, master.Address, 30*time.Second)
		}
		k, _ := wgtypes.GeneratePrivateKey()
		extra := &testnet.Node{Name: "sync-new", Role: "agent", Address: "192.168.3.250", Key: k}
		master.WriteConfig(append(nodes, extra), onNet3)
		master.Reload(&b.Script, "msg=reloaded")
		began, _ := logTime(master.Proc.Output(), "msg=reloading")
		var last time.Time
		for _, nd := range nodes[1:] {
			if !testnet.Eventually(30*time.Second, func() bool { return strings.Contains(nd.Proc.Output(), "sync: took the master's cluster file") }) {
				b.Fatalf("%s did not take the master's file:\n%s", nd.Name, nd.Proc.Output())
			}
			if t, ok := logTime(nd.Proc.Output(), "sync: took the master's cluster file"); ok && t.After(last) {
				last = t
			}
		}
		b.add("Edit once", fmt.Sprintf("master's reload to the last of %d agents applying it", n), fmt.Sprintf("%.0f ms", float64(last.Sub(began).Microseconds())/1000),
			"from the logs' time= (one clock); agents long-poll the master over wg0")
		for _, nd := range nodes {
			nd.Stop(&b.Script)
		}
	}
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", "^BenchmarkSync1000$", "-benchmem", "-benchtime", "3x", "./meshsync").CombinedOutput()
	if err != nil {
		b.Fatalf("go test -bench: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`BenchmarkSync1000\S*\s+\d+\s+(\d+) ns/op\s+(\d+) heap-B/waiting-agent\s+(\d+) B/op`).FindStringSubmatch(string(out))
	if m == nil {
		b.Fatalf("no benchmark line:\n%s", out)
	}
	ns, _ := strconv.ParseFloat(m[1], 64)
	heap, _ := strconv.ParseFloat(m[2], 64)
	b.add("Edit once", "1000 simulated agents: one update to all (100 KiB file)", fmt.Sprintf("%.0f ms", ns/1e6-200),
		fmt.Sprintf("heap %.1f KiB per waiting agent (both ends of the loopback); go test -bench BenchmarkSync1000 ./meshsync", heap/1024))
}
