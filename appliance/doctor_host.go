package appliance

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/bounded"
)

// unresolved looks up every peer's endpoint name and says which do not
// resolve, and why.
func unresolved(ctx context.Context, p *Plan) map[string]string {
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range p.Config.Peers() {
		host := n.Endpoint.Host
		if host == "" {
			continue
		}
		if _, isIP := n.Endpoint.IP(); isIP {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, doctorWait)
			defer cancel()
			addrs, err := net.DefaultResolver.LookupNetIP(lctx, "ip4", host)
			if err == nil && len(addrs) > 0 {
				return
			}
			why := "no IPv4 address"
			if err != nil {
				why = err.Error()
			}
			mu.Lock()
			out[host] = why
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// rpFilter reads the reverse-path filter that applies to iface (the
// kernel takes the larger of all's and its own: 0 off, 1 strict, 2
// loose) and the kernel's count of packets it dropped (TcpExt
// IPReversePathFilter).
func rpFilter(iface string) (mode int, drops int64) {
	for _, dev := range []string{"all", iface} {
		data, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", dev, "rp_filter"))
		if err != nil {
			continue
		}
		if v, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			mode = max(mode, v)
		}
	}
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return mode, 0
	}
	return mode, netstatCounter(string(data), "TcpExt:", "IPReversePathFilter")
}

// netstatCounter reads one counter of /proc/net/netstat (a header line
// of names, then a line of values, per group).
func netstatCounter(data, group, name string) int64 {
	lines := strings.Split(data, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group || len(values) != len(names) {
			continue
		}
		for j, n := range names {
			if n == name {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				return v
			}
		}
	}
	return 0
}

// k3sDataDir is k3s's data directory: --data-dir from its arguments,
// else its default.
func k3sDataDir(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			return v
		}
		if (a == "--data-dir" || a == "-d") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return "/var/lib/rancher/k3s"
}

// k3sCerts reads the expiry of k3s's certificates on this node: the
// server's (server/tls) and the agent's (agent).
func k3sCerts(args []string) map[string]time.Time {
	dir := k3sDataDir(args)
	out := map[string]time.Time{}
	for _, pattern := range []string{"server/tls/*.crt", "server/tls/etcd/*.crt", "agent/*.crt"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, file := range files {
			if exp, ok := certExpiry(file); ok {
				out[file] = exp
			}
		}
	}
	return out
}

// certExpiry is the NotAfter of the first certificate in file.
func certExpiry(file string) (time.Time, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return time.Time{}, false
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return time.Time{}, false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, false
	}
	return c.NotAfter, true
}

// k3sReady asks k3s whether this node is Ready (nil: cannot tell), with
// k3s's last lines when it is not; only whether it runs unless ask.
func (a *App) k3sReady(ctx context.Context, p *Plan, ask bool) (*bool, []string) {
	st := a.k3s.Status()
	no := false
	if !st.Running {
		lines := a.k3s.Tail()
		if st.LastExit != "" {
			lines = append(lines, fmt.Sprintf("(k3s is not running: it exited, %s; restarts: %d)", st.LastExit, st.Restarts))
		}
		return &no, lines
	}
	if !ask {
		return nil, nil
	}
	kubeconfig := "/etc/rancher/k3s/k3s.yaml"
	if p.Config.Self.Role == configs.RoleAgent {
		kubeconfig = filepath.Join(k3sDataDir(p.K3s.Args), "agent/kubelet.kubeconfig")
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil, nil
	}
	out, err := bounded.Output(doctorWait, nil, p.K3s.Binary, "kubectl", "--kubeconfig", kubeconfig, "--request-timeout=2s",
		"get", "node", p.Config.Self.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil || ctx.Err() != nil {
		return nil, nil
	}
	ready := strings.TrimSpace(string(out)) == "True"
	if ready {
		return &ready, nil
	}
	return &ready, a.k3s.Tail()
}
