//go:build linux

package main

import (
	"fmt"
	"slices"
	"strings"
)

// memoryCurve runs the 4-stream throughput under several Go runtime memory
// settings, given to the appliance through the environment (GOMEMLIMIT,
// GOGC), which take precedence over its own default.
func (b *bench) memoryCurve() {
	for _, env := range [][]string{
		{"GOMEMLIMIT=off", "GOGC=100"},
		{"GOMEMLIMIT=384MiB", "GOGC=100"},
		{"GOMEMLIMIT=320MiB", "GOGC=100"},
		{"GOMEMLIMIT=256MiB", "GOGC=100"},
		{"GOMEMLIMIT=192MiB", "GOGC=100"},
		{"GOMEMLIMIT=160MiB", "GOGC=100"},
		{"GOMEMLIMIT=128MiB", "GOGC=100"},
		{"GOMEMLIMIT=64MiB", "GOGC=100"},
		{"GOMEMLIMIT=256MiB", "GOGC=off"},
	} {
		limit := strings.Join(env, " ")
		b.startAppliances(env...)
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
		b.add("Memory limit", limit, fmt.Sprintf("%s peak", mib(peak)),
			fmt.Sprintf("%s median, 4 streams (runs %.0f to %.0f); vs reference: RSS %s, throughput %s",
				mbit(bps), slices.Min(samples)/1e6, slices.Max(samples)/1e6, ratio(peak, b.refPeakKB), ratio(bps, b.refBps[1])))
	}
}
