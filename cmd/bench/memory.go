//go:build linux

package main

import (
	"fmt"
	"slices"
	"strings"
)

// memoryCurve runs the 4-stream throughput for each wireguard-go batch cap
// (runtime.batch_size) under each Go memory limit (GOMEMLIMIT in the
// environment, which takes precedence over runtime.memory_limit), and
// reports the appliance's peak RSS and throughput against the reference
// measured in the same run.
func (b *bench) memoryCurve() {
	batches := []int{0, 64, 32, 16, 8}
	limits := []string{"GOMEMLIMIT=off", "GOMEMLIMIT=256MiB", "GOMEMLIMIT=128MiB", "GOMEMLIMIT=96MiB"}
	if b.o.smoke {
		batches, limits = []int{0, 16}, []string{"GOMEMLIMIT=off", "GOMEMLIMIT=96MiB"}
	}
	for _, batch := range batches {
		for _, limit := range limits {
			b.memoryPoint(batch, limit)
		}
	}
}

func (b *bench) memoryPoint(batch int, env ...string) {
	var edit func(string) string
	name := "batch 128 (wireguard-go's own)"
	if batch > 0 {
		name = fmt.Sprintf("batch %d", batch)
		edit = func(s string) string { return s + fmt.Sprintf("runtime:\n  batch_size: %d\n", batch) }
	}
	name += ", " + strings.Join(env, " ")
	b.startAppliancesWith(edit, env...)
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
	b.add("Memory curve", name, fmt.Sprintf("%s peak", mib(peak)),
		fmt.Sprintf("%s median, 4 streams (runs %.0f to %.0f); vs reference: throughput %s, RSS %s",
			mbit(bps), slices.Min(samples)/1e6, slices.Max(samples)/1e6, ratio(bps, b.refBps[1]), ratio(peak, b.refPeakKB)))
}
