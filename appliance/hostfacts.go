package appliance

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/tunnel"
)

// Facts are what the plan found on the host beyond what it needs to run:
// the platform details that decide k3s flags or deserve a word in
// `appliance check`.
type Facts struct {
	Kernel string
	// Cgroup is 1 (CentOS 7: v1 only) or 2.
	Cgroup int
	// K3sVersion is `k3s --version`'s version ("v1.36.0+k3s1"), "" if it
	// could not be read (K3sVersionErr says why).
	K3sVersion    string
	K3sVersionErr error
	Firewalld     bool
	// SELinux is enforcing, permissive or disabled.
	SELinux string
	// K3sLabel is the k3s binary's SELinux label ("" without SELinux).
	K3sLabel string
}

// FailCgroupV1Flag keeps a kubelet of Kubernetes 1.35 or later running on
// a cgroup v1 host (its failCgroupV1 setting defaults to true from 1.35).
const FailCgroupV1Flag = "--kubelet-arg=fail-cgroupv1=false"

// k3sVersionRE finds the Kubernetes version in `k3s --version` output:
// "k3s version v1.36.0+k3s1 (abcdef12)".
var k3sVersionRE = regexp.MustCompile(`\bv(\d+)\.(\d+)\.(\d+)`)

// kubeMinor returns the Kubernetes minor version of a k3s version string.
func kubeMinor(version string) (minor int, ok bool) {
	m := k3sVersionRE.FindStringSubmatch(version)
	if m == nil || m[1] != "1" {
		return 0, false
	}
	minor, err := strconv.Atoi(m[2])
	return minor, err == nil
}

// brokenOnKernel310 are k3s releases known not to run pods on CentOS 7's
// kernel: they enable containerd's unprivileged ports without checking for
// net.ipv4.ip_unprivileged_port_start, which 3.10 lacks (k3s-io/k3s#5912,
// fixed by k3s-io/k3s#5913 in v1.24.4; rancher/rancher#38610 for v1.24.2).
var brokenOnKernel310 = []string{"v1.24.2+k3s1", "v1.24.2+k3s2", "v1.24.3+k3s1"}

// platformArgs returns the k3s flags this host needs beyond the cluster
// file's, with the notes that explain them.
func platformArgs(cfg *configs.Config, f Facts) (args, notes []string) {
	extra := cfg.Cluster.K3s.AgentArgs
	if cfg.Self.Role.ControlPlane() {
		extra = cfg.Cluster.K3s.ServerArgs
	}
	if f.Cgroup != 1 {
		return nil, nil
	}
	minor, known := kubeMinor(f.K3sVersion)
	switch {
	case slices.ContainsFunc(extra, func(a string) bool { return strings.Contains(a, "fail-cgroupv1") }):
		notes = append(notes, "cgroup v1: the k3s args already set the kubelet's fail-cgroupv1; left as given")
	case known && minor >= 35:
		args = append(args, FailCgroupV1Flag)
		notes = append(notes, fmt.Sprintf("cgroup v1: k3s %s (Kubernetes 1.%d) refuses cgroup v1 unless told otherwise; the appliance adds %s", f.K3sVersion, minor, FailCgroupV1Flag))
	case known:
		notes = append(notes, fmt.Sprintf("cgroup v1: k3s %s (Kubernetes 1.%d) runs on cgroup v1 as it is", f.K3sVersion, minor))
	default:
		notes = append(notes, "cgroup v1: the k3s version is unknown, so no fail-cgroupv1 flag is added; Kubernetes 1.35 and later need "+FailCgroupV1Flag+" in the k3s args")
	}
	return args, notes
}

// warnings are allowed but risky: a k3s release known not to run on this
// kernel, metrics served beyond the loopback.
func warnings(cfg *configs.Config, f Facts) []string {
	var out []string
	if v, err := tunnel.ParseRelease(f.Kernel); err == nil && v.Less(tunnel.KernelVersion{Major: 4, Minor: 0}) {
		if slices.Contains(brokenOnKernel310, f.K3sVersion) {
			out = append(out, fmt.Sprintf("k3s %s does not run pods on kernel %s (k3s-io/k3s#5912); install v1.24.4 or later", f.K3sVersion, f.Kernel))
		}
	}
	if cfg.Cluster.Interface.PersistentKeepalive == 0 {
		for _, n := range cfg.Cluster.Nodes {
			if n.Endpoint.Host == "" {
				out = append(out, fmt.Sprintf("interface.persistent_keepalive is 0 and %s has no endpoint: its NAT mapping closes when it is quiet, "+
					"and no peer is relayed; set persistent_keepalive: 25s", n.Name))
				break
			}
		}
	}
	switch servers := len(cfg.Cluster.Servers()); {
	case servers == 2:
		out = append(out, "two k3s servers (the master and one server) tolerate no failure: etcd needs a majority, 2 of 2, so losing either stops the API; add a third server in another cloud")
	case servers > 2 && servers%2 == 0:
		out = append(out, fmt.Sprintf("%d k3s servers tolerate no more failures than %d: etcd needs a majority; use an odd number", servers, servers-1))
	}
	if m := cfg.Cluster.Metrics; m.Enabled {
		host, _, _ := net.SplitHostPort(m.Listen)
		if ip, err := netip.ParseAddr(host); host == "" || err != nil || !ip.IsLoopback() {
			out = append(out, fmt.Sprintf("metrics.listen %s is reachable from other hosts (peers, pods, the provider's network): "+
				"the metrics name every peer and its endpoint; keep 127.0.0.1 unless a scraper elsewhere needs them", m.Listen))
		}
	}
	return out
}

// hostNotes are the lines `appliance check` prints about the platform.
func hostNotes(cfg *configs.Config, f Facts) []string {
	var notes []string
	switch {
	case f.K3sVersion != "":
		notes = append(notes, "k3s version: "+f.K3sVersion)
	case f.K3sVersionErr != nil:
		notes = append(notes, "k3s version: unknown ("+f.K3sVersionErr.Error()+")")
	}
	notes = append(notes, fmt.Sprintf("cgroup: v%d", f.Cgroup))
	if f.Firewalld {
		notes = append(notes, "firewalld: active; the appliance's chains are jumped to ahead of its REJECT rules and accept the WireGuard port, "+
			"the mesh on "+cfg.Cluster.Interface.Name+" and the k3s networks: nothing to open by hand")
	} else {
		notes = append(notes, "firewalld: not active")
	}
	notes = append(notes, selinuxNote(cfg, f))
	return notes
}

func selinuxNote(cfg *configs.Config, f Facts) string {
	if f.SELinux == "" || f.SELinux == "disabled" {
		return "SELinux: disabled"
	}
	args := slices.Concat(cfg.Cluster.K3s.ServerArgs, cfg.Cluster.K3s.AgentArgs)
	hasFlag := slices.ContainsFunc(args, func(a string) bool { n, _, _, ok := configs.SplitFlag(a); return ok && n == "selinux" })
	labelled := strings.Contains(f.K3sLabel, "container_runtime_exec_t")
	switch {
	case !labelled:
		return fmt.Sprintf("SELinux: %s, but k3s-selinux does not label %s (label %q): install container-selinux and k3s-selinux (the k3s installer does), then add --selinux to k3s.server_args and k3s.agent_args",
			f.SELinux, cfg.Cluster.K3s.Binary, f.K3sLabel)
	case !hasFlag:
		return fmt.Sprintf("SELinux: %s; k3s-selinux labels %s; add --selinux to k3s.server_args and k3s.agent_args so that k3s's containerd runs with SELinux", f.SELinux, cfg.Cluster.K3s.Binary)
	default:
		return fmt.Sprintf("SELinux: %s; k3s-selinux labels %s and --selinux is set; a k3s left by a crash is stopped at the next start (the parent-death signal does not cross the SELinux transition)", f.SELinux, cfg.Cluster.K3s.Binary)
	}
}
