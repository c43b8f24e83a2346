//go:build linux

// Command bench measures what operators care about on this machine, in
// network namespaces, and writes BENCHMARKS.md: tunnel throughput of the
// appliance against the reference wireguard-go and the plain underlay,
// time from start to the first packet, the cost of a reload in a
// 1000-node cluster, and memory. `make bench` runs it; `make bench-smoke`
// runs a short version so that it cannot rot.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

type options struct {
	appliance, standin, reference, out string
	// before is an earlier appliance the nat section measures beside this
	// one (the design before ciphertext relays).
	before                         string
	smoke, rows                    bool
	only, inVM                     string
	reps, seconds, starts, reloads int
	bigCluster                     int
	points                         []point
}

func main() {
	var o options
	flag.StringVar(&o.appliance, "appliance", "bin/appliance", "the appliance binary")
	flag.StringVar(&o.standin, "k3s-standin", "bin/k3s-standin", "the stand-in k3s")
	flag.StringVar(&o.before, "before", "", "an earlier appliance binary the nat section measures side by side (the design before ciphertext relays)")
	flag.StringVar(&o.reference, "wireguard-go", "bin/wireguard-go", "the reference wireguard-go, built from the module version in go.mod")
	flag.StringVar(&o.out, "out", "BENCHMARKS.md", "where to write the report")
	flag.BoolVar(&o.smoke, "smoke", false, "a short run that checks the benchmark works (figures are not meaningful)")
	flag.StringVar(&o.only, "only", "", "run only these sections (comma-separated): throughput, start, scale, sync, nat, idle, memory, kernel; memory needs throughput for its ratios")
	flag.BoolVar(&o.rows, "rows", false, "also print each result as a tab-separated line starting wgk3s-bench-row (the kernel section's VM uses it)")
	flag.StringVar(&o.inVM, "in-vm", "", "set inside the kernel section's VM: what the VM is")
	pointsFlag := flag.String("points", "", "the memory curve's points, batch:inflight:limit,... (default: the full curve)")
	flag.Parse()
	o.reps, o.seconds, o.starts, o.reloads, o.bigCluster = 3, 10, 10, 5, 1000
	if o.smoke {
		o.reps, o.seconds, o.starts, o.reloads, o.bigCluster = 1, 2, 2, 1, 100
	}
	o.points = defaultPoints(o.smoke)
	if *pointsFlag != "" {
		ps, err := parsePoints(*pointsFlag)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		o.points = ps
	}
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root to create network namespaces")
		os.Exit(1)
	}
	for _, p := range []*string{&o.appliance, &o.standin, &o.reference} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		*p = abs
	}
	b := &bench{o: o, started: time.Now()}
	err := b.Do(b.runAll)
	b.Teardown()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(o.out, []byte(b.report()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s in %s\n", o.out, time.Since(b.started).Round(time.Second))
}

type bench struct {
	testnet.Script
	o       options
	started time.Time
	net     *testnet.Net
	a, b    *testnet.Node // a: master (iperf3 server), b: agent (client)

	results     []result
	refPeakKB   float64    // the reference's peak RSS under load
	profileText string     // pprof -top of the appliances under load, for the report
	refBps      [2]float64 // the reference's throughput, 1 and 4 streams
}

// result is one row of the report.
type result struct{ section, name, value, detail string }

func (b *bench) add(section, name, value, detail string) {
	fmt.Printf("  %-40s %-16s %s\n", name, value, detail)
	if b.o.rows {
		fmt.Print(rowPrefix + strings.Join([]string{section, name, value, detail}, "\t") + "\n")
	}
	b.results = append(b.results, result{section, name, value, detail})
}

func (b *bench) runAll() {
	testnet.Requirements(&b.Script, "iperf3", "wg")
	b.net = testnet.New(&b.Script)
	// Userspace: the figures compare the embedded wireguard-go with the reference.
	bins := testnet.Binaries{Appliance: b.o.appliance, K3s: b.o.standin, Mode: "userspace"}
	b.a = testnet.NewNode(&b.Script, b.net.AddServer("master", 1), bins, "k3s-master", "master", "192.168.2.1")
	b.b = testnet.NewNode(&b.Script, b.net.AddServer("node-1", 2), bins, "k3s-node-1", "agent", "192.168.2.2")
	b.a.Srv.Start("iperf3", "-s", "-i", "0", "--logfile", "/run/wgk3s/iperf3.log")
	if b.o.inVM != "" {
		// Under software emulation (and a loaded host) a stop takes far
		// longer than on hardware: k3s's grace, iptables programs that run
		// at a fraction of their speed, wg0's teardown.
		b.a.StopWithin, b.b.StopWithin = 3*time.Minute, 3*time.Minute
	}

	for _, s := range []struct {
		name, title string
		run         func()
	}{
		{"throughput", "throughput", b.throughput},
		{"start", "start to first packet", b.startToFirstPacket},
		{"scale", "memory and reload at scale", b.scale},
		{"sync", "edit once: the master's file handed round", b.syncSpread},
		{"nat", "nodes behind NAT: direct and relayed", b.natPaths},
		{"idle", "an idle master's cost", b.idle},
		{"memory", "memory limit trade-off under load", b.memoryCurve},
		{"kernel", "kernel WireGuard against userspace (in a VM where this kernel has none)", b.kernelModes},
	} {
		if b.o.only == "" || slices.Contains(strings.Split(b.o.only, ","), s.name) {
			fmt.Println("== " + s.title)
			s.run()
		}
	}
}
