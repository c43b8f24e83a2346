//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// kubeProxyRules is how many rules stand in for kube-proxy's in the
// master's filter table: every iptables-save (and every `iptables -C` on
// CentOS 7's legacy iptables) reads the whole table.
const kubeProxyRules = 300

// idle measures what an idle master costs: the CPU time of the appliance
// and the programs it runs (iptables), the iptables programs it runs per
// 5 s (counted with strace -f), and how soon a rule someone deletes is
// back, with kubeProxyRules extra rules in its filter table.
func (b *bench) idle() {
	window, traced := 60*time.Second, 20*time.Second
	if b.o.smoke {
		window, traced = 10*time.Second, 5*time.Second
	}
	var rules strings.Builder
	rules.WriteString("*filter\n:KUBE-BENCH - [0:0]\n-A FORWARD -j KUBE-BENCH\n")
	for i := range kubeProxyRules - 1 {
		fmt.Fprintf(&rules, "-A KUBE-BENCH -s 10.%d.%d.0/24 -p tcp --dport %d -j ACCEPT\n", 100+i/250, i%250, 30000+i)
	}
	rules.WriteString("COMMIT\n")
	for _, backend := range []string{"nft", "legacy"} {
		restore := b.a.Srv.Command(context.Background(), "iptables-"+backend+"-restore", "--noflush")
		restore.Stdin = strings.NewReader(rules.String())
		if out, err := restore.CombinedOutput(); err != nil {
			b.Fatalf("iptables-%s-restore of %d rules: %v\n%s", backend, kubeProxyRules, err, out)
		}
	}
	// The floor: the reference wireguard-go alone, idle, same peers.
	ref := b.startReference()
	time.Sleep(10 * time.Second)
	refOwn0, _ := cpuTimes(ref[0].Pid())
	r0 := time.Now()
	time.Sleep(window)
	refOwn1, _ := cpuTimes(ref[0].Pid())
	b.add("Idle", "idle reference wireguard-go (the floor)", fmt.Sprintf("%.2f%%", 100*(refOwn1-refOwn0).Seconds()/time.Since(r0).Seconds()),
		fmt.Sprintf("of one core over %s: the wireguard-go binary alone on the master, one peer, keepalive 25 s", window))
	for _, p := range ref {
		p.Signal(syscall.SIGTERM)
		p.Wait(10 * time.Second)
	}
	// nf_tables notifies changes (Debian 12's iptables); CentOS 7's
	// legacy iptables does not and is polled.
	for _, backend := range []string{"nft", "legacy"} {
		b.idleWith(backend, window, traced)
	}
}

// idleWith measures an idle master whose rules are in backend.
func (b *bench) idleWith(backend string, window, traced time.Duration) {
	b.startAppliancesWith(func(s string) string { return s + "firewall:\n  backend: " + backend + "\n" })
	defer b.stopAppliances()
	time.Sleep(10 * time.Second) // past the start: what follows is the idle state
	pid := b.a.Proc.Pid()
	own0, kids0 := cpuTimes(pid)
	t0 := time.Now()
	time.Sleep(window)
	own1, kids1 := cpuTimes(pid)
	took := time.Since(t0).Seconds()
	own, kids := (own1 - own0).Seconds(), (kids1 - kids0).Seconds()
	b.add("Idle", "idle master, iptables-"+backend+": CPU, appliance and the programs it runs", fmt.Sprintf("%.2f%%", 100*(own+kids)/took),
		fmt.Sprintf("of one core over %.0f s (the appliance %.2f%%, the programs it ran %.2f%%), one agent, stand-in k3s, %d extra filter rules; utime+stime and cutime+cstime from /proc/PID/stat; goal <= 0.5%%",
			took, 100*own/took, 100*kids/took, kubeProxyRules))
	if os.Getenv("WGK3S_BENCH_IDLE_PROFILE") != "" { // a CPU profile of the idle appliance, printed
		f := filepath.Join(os.TempDir(), "wgk3s-idle-cpu.pprof")
		if err := getProfileFile(b.a, "/debug/pprof/profile?seconds=60", f); err == nil {
			out, _ := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=40", f).CombinedOutput()
			fmt.Println(string(out))
		}
	}
	if execs, err := b.countExecs(pid, traced); err != nil {
		b.add("Idle", "idle master, iptables-"+backend+": iptables programs run per 5 s", "n/a", err.Error())
	} else {
		b.add("Idle", "idle master, iptables-"+backend+": iptables programs run per 5 s", fmt.Sprintf("%.1f", float64(execs)*5/traced.Seconds()),
			fmt.Sprintf("strace -f -e trace=execve for %s; goal <= 2", traced))
	}
	// A rule deleted by someone else comes back.
	ipt := "iptables-" + backend
	before := b.a.Srv.Run(ipt, "-S", "WGK3S-INPUT")
	b.a.Srv.Run(ipt, "-D", "WGK3S-INPUT", "1")
	gone := time.Now()
	if !testnet.Eventually(30*time.Second, func() bool {
		out, _ := b.a.Srv.Try(ipt, "-S", "WGK3S-INPUT")
		return out == before
	}) {
		b.Fatalf("a deleted rule was not put back within 30 s\n%s", b.a.Proc.Output())
	}
	b.add("Idle", "idle master, iptables-"+backend+": a deleted rule is back after", fmt.Sprintf("%.1f s", time.Since(gone).Seconds()),
		ipt+" -D of WGK3S-INPUT's first rule, then -S polled every 0.1 s; goal <= 5 s")
}

// countExecs counts the iptables programs pid and its children start
// within d.
func (b *bench) countExecs(pid int, d time.Duration) (int, error) {
	if _, err := exec.LookPath("strace"); err != nil {
		return 0, fmt.Errorf("strace is not installed (apt-get install strace)")
	}
	log := filepath.Join(os.TempDir(), fmt.Sprintf("wgk3s-bench-strace-%d", pid))
	defer os.Remove(log)
	cmd := exec.Command("timeout", "-s", "INT", strconv.Itoa(int(d.Seconds())), "strace", "-f", "-qq", "-e", "trace=execve", "-o", log, "-p", strconv.Itoa(pid))
	cmd.Run() // timeout ends it
	data, err := os.ReadFile(log)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "execve(") && strings.Contains(line, "iptables") {
			n++
		}
	}
	return n, nil
}

// cpuTimes is pid's own user and system time, and that of its children
// that ended and were waited for (the iptables programs it ran).
func cpuTimes(pid int) (own, children time.Duration) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ticks := func(fields ...int) time.Duration {
		var t int
		for _, i := range fields {
			n, _ := strconv.Atoi(f[i])
			t += n
		}
		return time.Duration(t) * time.Second / 100 // USER_HZ
	}
	return ticks(11, 12), ticks(13, 14) // utime stime, cutime cstime
}
