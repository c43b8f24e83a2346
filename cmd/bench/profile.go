//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"github.com/wgk3s/wgk3s/status"
)

// profiles takes Go profiles of both running appliances from their status
// sockets (/debug/pprof) while a 4-stream iperf3 load runs: CPU for
// seconds, then the heap (in use and allocated). They are written to dir
// and the top entries of each are returned, for the report.
func (b *bench) profiles(dir string, seconds int) map[string][]string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	load := b.b.Srv.Start("iperf3", "-c", b.a.Address, "-t", fmt.Sprint(seconds+4), "-P", "4")
	time.Sleep(2 * time.Second) // let the load reach its steady state
	tops := map[string][]string{}
	type fetch struct {
		node       *testnet.Node
		name, path string
	}
	var files []fetch
	done := make(chan error, 2)
	for _, n := range []*testnet.Node{b.a, b.b} {
		f := filepath.Join(dir, n.Name+"-cpu.pprof")
		files = append(files, fetch{n, "cpu", f})
		go func() { done <- getProfileFile(n, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), f) }()
	}
	for range 2 {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []*testnet.Node{b.a, b.b} {
		f := filepath.Join(dir, n.Name+"-heap.pprof")
		if err := getProfileFile(n, "/debug/pprof/heap", f); err != nil {
			b.Fatal(err)
		}
		files = append(files, fetch{n, "inuse_space", f}, fetch{n, "alloc_space", f})
	}
	load.Wait(time.Duration(seconds+20) * time.Second)
	for _, f := range files {
		args := []string{"tool", "pprof", "-top", "-nodecount=8"}
		if f.name != "cpu" {
			args = append(args, "-sample_index="+f.name)
		}
		out, err := exec.Command("go", append(args, f.path)...).CombinedOutput()
		if err != nil {
			b.Fatalf("go tool pprof %s: %v\n%s", f.path, err, out)
		}
		tops[f.node.Name+" "+f.name] = topLines(string(out))
	}
	return tops
}

// topLines keeps pprof -top's summary line and its table.
func topLines(out string) []string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "total") || strings.Contains(l, "flat%") || (len(keep) > 0 && strings.TrimSpace(l) != "") {
			keep = append(keep, l)
		}
	}
	return keep
}

// getProfileFile fetches path from n's status socket into file.
func getProfileFile(n *testnet.Node, path, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := getProfile(n, path, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// getProfile fetches path from n's status socket into w.
func getProfile(n *testnet.Node, path string, w io.Writer) error {
	sock := n.Srv.HostPath(status.DefaultSocket)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 2 * time.Minute}
	resp, err := c.Get("http://wgk3s" + path)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s: %s: %s", n.Name, path, resp.Status, body)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// profileDefault profiles the appliances with their defaults under load,
// for the report: the heap in use on both ends, and the CPU of the sender.
func (b *bench) profileDefault() {
	b.startAppliances()
	seconds := 10
	if b.o.smoke {
		seconds = 2
	}
	tops := b.profiles(filepath.Join(os.TempDir(), "wgk3s-profiles"), seconds)
	b.stopAppliances()
	var w strings.Builder
	for _, p := range []struct {
		node *testnet.Node
		role string
		kind string
	}{
		{b.b, "sender", "inuse_space"}, {b.a, "receiver", "inuse_space"}, {b.b, "sender", "alloc_space"},
		{b.b, "sender", "cpu"}, {b.a, "receiver", "cpu"},
	} {
		k := p.node.Name + " " + p.kind
		fmt.Fprintf(&w, "%s (%s):\n%s\n\n", k, p.role, strings.Join(tops[k], "\n"))
	}
	b.profileText = w.String()
	fmt.Print(b.profileText)
}

var totalAllocRE = regexp.MustCompile(`(?m)^# TotalAlloc = (\d+)$`)

// totalAlloc is the bytes n's appliance has allocated since it started
// (runtime.MemStats.TotalAlloc, from its heap profile's text form).
func (b *bench) totalAlloc(n *testnet.Node) float64 {
	var buf bytes.Buffer
	if err := getProfile(n, "/debug/pprof/heap?debug=1", &buf); err != nil {
		b.Fatal(err)
	}
	m := totalAllocRE.FindSubmatch(buf.Bytes())
	if m == nil {
		b.Fatalf("%s: no TotalAlloc in the heap profile", n.Name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// idleAllocation measures how fast an idle appliance (one peer, keepalives
// every 25 s) allocates: the heap grows by that between collections. With
// GOGC=off the runtime collects only at the memory limit (no periodic
// collection), so that rate is how fast idle RSS climbs to the limit.
func (b *bench) idleAllocation(window time.Duration) {
	b.startAppliances()
	time.Sleep(5 * time.Second) // past the start's own allocations
	// A reading allocates too (the profile's text): measure that once and
	// take it off.
	first := b.totalAlloc(b.a)
	before := b.totalAlloc(b.a)
	reading := before - first
	time.Sleep(window)
	rate := max(0, b.totalAlloc(b.a)-before-reading) / window.Minutes() // bytes per minute
	b.stopAppliances()
	hours := "never"
	if rate > 0 {
		hours = fmt.Sprintf("%.0f h", float64(256<<20)/rate/60)
	}
	b.add("Memory curve", "idle allocation, master with 1 peer", fmt.Sprintf("%.1f KiB/min", rate/1024),
		fmt.Sprintf("over %v; with GOGC=off the heap would climb from idle to a 256MiB limit in about %s (no periodic GC when GOGC=off)", window, hours))
}
