//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// iperf runs the client on b against dst and returns received bits/s and bytes.
func (b *bench) iperf(dst string, streams int) (float64, float64) {
	return b.iperfFrom(b.b, dst, streams)
}

// iperfFrom runs the client on from against dst.
func (b *bench) iperfFrom(from *testnet.Node, dst string, streams int) (float64, float64) {
	args := []string{"-c", dst, "-t", strconv.Itoa(b.o.seconds), "-P", strconv.Itoa(streams), "-J", "-O", "1"}
	out, err := from.Srv.Try("iperf3", args...)
	if err != nil {
		b.Fatalf("iperf3 %v: %v\n%s", args, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Bytes         float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond, r.End.SumReceived.Bytes
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// rssKiB returns VmRSS and VmHWM (peak) of pid in KiB.
func rssKiB(pid int) (rss, hwm float64) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			rss, _ = strconv.ParseFloat(f[1], 64)
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			hwm, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return rss, hwm
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

type tput struct {
	bps       [2]float64 // 1 stream, 4 streams: median bits/s
	cpuPerGB  float64    // CPU seconds of the WireGuard processes per GB received, 4 streams
	peakRSSKB float64
}

// measure runs the iperf matrix against dst; pids are the processes whose
// CPU time is charged to the tunnel.
func (b *bench) measure(label, dst string, pids []int) tput {
	var t tput
	var cpu, gb float64
	for i, streams := range []int{1, 4} {
		var samples []float64
		for r := 0; r < b.o.reps; r++ {
			before := 0.0
			for _, p := range pids {
				before += cpuSeconds(p)
			}
			bps, bytes := b.iperf(dst, streams)
			after := 0.0
			for _, p := range pids {
				after += cpuSeconds(p)
			}
			samples = append(samples, bps)
			if streams == 4 {
				cpu += after - before
				gb += bytes / 1e9
			}
		}
		t.bps[i] = median(samples)
	}
	if gb > 0 && len(pids) > 0 {
		t.cpuPerGB = cpu / gb
	}
	for _, p := range pids {
		_, hwm := rssKiB(p)
		t.peakRSSKB = max(t.peakRSSKB, hwm)
	}
	fmt.Printf("  %-12s 1 stream %7.0f Mbit/s   4 streams %7.0f Mbit/s   %.2f CPU s/GB   peak RSS %.0f MiB\n",
		label, t.bps[0]/1e6, t.bps[1]/1e6, t.cpuPerGB, t.peakRSSKB/1024)
	return t
}

func (b *bench) startAppliances(env ...string) {
	b.startAppliancesWith(nil, env...)
}

// startAppliancesWith starts both appliances with the cluster file edited
// by edit (nil: as ClusterFile writes it) and env added to theirs.
func (b *bench) startAppliancesWith(edit func(string) string, env ...string) {
	for _, n := range []*testnet.Node{b.a, b.b} {
		n.WriteConfig([]*testnet.Node{b.a, b.b}, edit)
		n.StartWith(&b.Script, append([]string{"NOTIFY_SOCKET="}, env...)...)
	}
	b.b.PingUntil(&b.Script, b.a.Address, 20*time.Second)
}

func (b *bench) stopAppliances() {
	for _, n := range []*testnet.Node{b.a, b.b} {
		n.Stop(&b.Script)
	}
}

// startReference runs the reference wireguard-go on both servers and
// configures it the way the manual procedure does: wg setconf, ip addr.
func (b *bench) startReference() []*testnet.Proc {
	var procs []*testnet.Proc
	peers := map[*testnet.Node]*testnet.Node{b.a: b.b, b.b: b.a}
	for _, n := range []*testnet.Node{b.a, b.b} {
		p := n.Srv.Start("env", "WG_PROCESS_FOREGROUND=1", b.o.reference, "-f", "wg0")
		if !testnet.Eventually(10*time.Second, func() bool {
			_, err := os.Stat(n.Srv.HostPath("/run/wireguard/wg0.sock"))
			return err == nil
		}) {
			b.Fatalf("reference wireguard-go did not start:\n%s", p.Output())
		}
		peer := peers[n]
		conf := fmt.Sprintf("[Interface]\nPrivateKey = %s\nListenPort = %d\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:%d\nAllowedIPs = %s/32\nPersistentKeepalive = 25\n",
			n.Key, testnet.Port, peer.Key.PublicKey(), peer.Srv.PublicIP, testnet.Port, peer.Address)
		n.Srv.WriteFile("/run/wgk3s/wg0.conf", []byte(conf), 0o600)
		n.Srv.Run("wg", "setconf", "wg0", "/run/wgk3s/wg0.conf")
		n.Srv.Run("ip", "addr", "add", n.Address+"/24", "dev", "wg0")
		n.Srv.Run("ip", "link", "set", "wg0", "mtu", "1420", "up")
		procs = append(procs, p)
	}
	b.b.PingUntil(&b.Script, b.a.Address, 20*time.Second)
	return procs
}

func (b *bench) throughput() {
	under := b.measure("underlay", b.a.Srv.PublicIP.String(), nil)

	b.startAppliances()
	app := b.measure("appliance", b.a.Address, []int{b.a.Proc.Pid(), b.b.Proc.Pid()})
	b.stopAppliances()

	refs := b.startReference()
	ref := b.measure("reference", b.a.Address, []int{refs[0].Pid(), refs[1].Pid()})
	for _, p := range refs {
		p.Signal(syscall.SIGTERM)
		p.Wait(10 * time.Second)
	}

	const s = "Throughput"
	for i, streams := range []string{"1 stream", "4 streams"} {
		b.add(s, "(a) appliance, userspace wg0, "+streams, mbit(app.bps[i]), "")
		b.add(s, "(b) reference wireguard-go, "+streams, mbit(ref.bps[i]), "")
		b.add(s, "(c) underlay without WireGuard, "+streams, mbit(under.bps[i]), "")
		b.add(s, "(a)/(b), "+streams, ratio(app.bps[i], ref.bps[i]), "goal >= 1.0")
		b.add(s, "(a)/(c), "+streams, ratio(app.bps[i], under.bps[i]), "")
	}
	b.add(s, "CPU s per GB, appliance (both ends)", fmt.Sprintf("%.2f", app.cpuPerGB), "4 streams")
	b.add(s, "CPU s per GB, reference (both ends)", fmt.Sprintf("%.2f", ref.cpuPerGB), "4 streams")
	b.add("Memory", "peak RSS under full load, appliance", mib(app.peakRSSKB), "VmHWM after the iperf3 runs")
	b.add("Memory", "peak RSS under full load, reference", mib(ref.peakRSSKB), "goal: appliance <= half of this")
	b.refPeakKB = ref.peakRSSKB
	b.refBps = ref.bps
}

func mbit(bps float64) string { return fmt.Sprintf("%.0f Mbit/s", bps/1e6) }
func mib(kb float64) string   { return fmt.Sprintf("%.1f MiB", kb/1024) }
func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}
