//go:build linux

package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// point is one setting of the memory curve: runtime.batch_size,
// runtime.inflight_packets (0: the appliance's default for either) and
// the Go memory limit (GOMEMLIMIT in the environment, which takes
// precedence over runtime.memory_limit).
type point struct {
	batch, inflight int
	limit           string
}

// defaultPoints is the curve `make bench` draws: wireguard-go's own batch
// and smaller caps, without and with the inflight bound, under no memory
// limit and under tighter ones.
func defaultPoints(smoke bool) []point {
	if smoke {
		return []point{{0, 0, "off"}, {16, 0, "96MiB"}, {0, 256, "96MiB"}}
	}
	// inflight 0 is no bound here (the curve shows what the bound does).
	var ps []point
	for _, batch := range []int{128, 32, 8} {
		for _, limit := range []string{"off", "256MiB", "96MiB"} {
			ps = append(ps, point{batch, 0, limit})
		}
	}
	for _, inflight := range []int{128, 256, 1024} {
		for _, limit := range []string{"off", "96MiB", "64MiB"} {
			ps = append(ps, point{128, inflight, limit})
		}
	}
	return ps
}

// parsePoints reads --points: "batch:inflight:limit,..."
func parsePoints(s string) ([]point, error) {
	var ps []point
	for _, f := range strings.Split(s, ",") {
		p := strings.Split(f, ":")
		if len(p) != 3 {
			return nil, fmt.Errorf("--points: %q is not batch:inflight:limit", f)
		}
		b, err1 := strconv.Atoi(p[0])
		i, err2 := strconv.Atoi(p[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--points: %q is not batch:inflight:limit", f)
		}
		ps = append(ps, point{b, i, p[2]})
	}
	return ps, nil
}

// memoryCurve runs the 4-stream throughput at each point and reports the
// appliance's peak RSS and throughput against the reference measured in
// the same run.
func (b *bench) memoryCurve() {
	for _, p := range b.o.points {
		b.memoryPoint(p)
	}
	window := time.Minute
	if b.o.smoke {
		window = 5 * time.Second
	}
	b.idleAllocation(window)
	b.profileDefault()
}

func (p point) String() string {
	return fmt.Sprintf("batch %d, inflight %s, GOMEMLIMIT=%s", p.batch, orNone(p.inflight), p.limit)
}

func orNone(n int) string {
	if n == 0 {
		return "unbounded"
	}
	return strconv.Itoa(n)
}

func (b *bench) memoryPoint(p point) {
	edit := func(s string) string {
		return s + fmt.Sprintf("runtime:\n  batch_size: %d\n  inflight_packets: %d\n", p.batch, p.inflight)
	}
	b.startAppliancesWith(edit, "GOMEMLIMIT="+p.limit)
	var samples []float64
	for r := 0; r < b.o.reps; r++ {
		bps, _ := b.iperf(b.a.Address, 4)
		samples = append(samples, bps)
	}
	bps := median(samples)
	_, hwmA := rssKiB(b.a.Proc.Pid())
	_, hwmB := rssKiB(b.b.Proc.Pid())
	b.stopAppliances()
	peak := max(hwmA, hwmB)
	b.add("Memory curve", p.String(), fmt.Sprintf("%s peak", mib(peak)),
		fmt.Sprintf("%s median, 4 streams (runs %.0f to %.0f); vs reference: throughput %s, RSS %s",
			mbit(bps), slices.Min(samples)/1e6, slices.Max(samples)/1e6, ratio(bps, b.refBps[1]), ratio(peak, b.refPeakKB)))
}
