//go:build linux

package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// startToFirstPacket starts the appliance on node-1 (the master already
// runs) while node-1 pings the master in a tight loop of one-packet pings,
// and takes the time from exec to the first reply over wg0. Until wg0 and
// its route exist, an "unreachable" route makes each ping fail at once (no
// ICMP from the router, which rate-limits its errors), so the loop's
// resolution is the few milliseconds of one ping's fork and exec.
func (b *bench) startToFirstPacket() {
	b.b.Srv.Run("ip", "route", "add", "unreachable", "192.168.2.0/24", "metric", "9999")
	defer b.b.Srv.Run("ip", "route", "del", "unreachable", "192.168.2.0/24", "metric", "9999")
	b.a.WriteConfig([]*testnet.Node{b.a, b.b}, nil)
	b.b.WriteConfig([]*testnet.Node{b.a, b.b}, nil)
	b.a.StartWith(&b.Script, "NOTIFY_SOCKET=")
	probe := `end=$((SECONDS+15)); while [ $SECONDS -lt $end ]; do ping -n -c 1 -W 1 ` + b.a.Address +
		` >/dev/null 2>&1 && { date +%s.%N; exit 0; }; done; exit 1`
	var samples []float64
	for i := 0; i < b.o.starts; i++ {
		loop := b.b.Srv.Start("bash", "-c", probe)
		time.Sleep(200 * time.Millisecond) // the loop runs before the appliance starts
		t0 := time.Now()
		b.b.Proc = b.b.Srv.Start("env", "WGK3S_STANDIN_DIR="+testnet.StandinDir, "NOTIFY_SOCKET=", b.o.appliance, "--role", "agent", "--config", testnet.ConfigPath)
		exited, err := loop.Wait(20 * time.Second)
		first, perr := strconv.ParseFloat(strings.TrimSpace(loop.Output()), 64)
		if !exited || err != nil || perr != nil {
			b.Fatalf("no ping answered within 15 s of start (%v)\nappliance:\n%s", err, b.b.Proc.Output())
		}
		samples = append(samples, first-float64(t0.UnixNano())/1e9)
		b.b.Proc.WaitOutput("msg=running", 10*time.Second)
		b.b.Stop(&b.Script)
	}
	b.a.Stop(&b.Script)
	b.add("Start", "appliance start to first ping answered over wg0", fmt.Sprintf("%.0f ms", median(samples)*1000),
		fmt.Sprintf("median of %d; min %.0f ms, max %.0f ms; goal < 1 s", len(samples), slices.Min(samples)*1000, slices.Max(samples)*1000))
}
