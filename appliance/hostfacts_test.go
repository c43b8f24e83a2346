package appliance

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCgroupV1Flag(t *testing.T) {
	extra := func(s string) string { return s + "  server_args: [--disable=traefik]\n" }
	tests := []struct {
		name     string
		host     fakeHost
		edit     func(string) string
		wantFlag bool
		note     string
	}{
		{"cgroup v1, Kubernetes 1.36", fakeHost{cgroup: 1, k3sVersion: "v1.36.0+k3s1"}, extra, true, "refuses cgroup v1 unless told otherwise"},
		{"cgroup v1, Kubernetes 1.35", fakeHost{cgroup: 1, k3sVersion: "v1.35.2+k3s1"}, nil, true, "the appliance adds"},
		{"cgroup v1, Kubernetes 1.34", fakeHost{cgroup: 1, k3sVersion: "v1.34.1+k3s1"}, nil, false, "runs on cgroup v1 as it is"},
		{"cgroup v2, Kubernetes 1.36", fakeHost{cgroup: 2, k3sVersion: "v1.36.0+k3s1"}, nil, false, "cgroup: v2"},
		{"cgroup v1, version unknown", fakeHost{cgroup: 1}, nil, false, "the k3s version is unknown"},
		{"cgroup v1, operator's own fail-cgroupv1", fakeHost{cgroup: 1, k3sVersion: "v1.36.0+k3s1"},
			func(s string) string { return s + "  server_args: [--kubelet-arg=fail-cgroupv1=true]\n" }, false, "left as given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlan(newCluster(t, 2).config(t, 2, 0, tt.edit), tt.host)
			at := slices.Index(p.K3s.Args, FailCgroupV1Flag)
			if (at >= 0) != tt.wantFlag {
				t.Errorf("argv %q: flag present %v, want %v", p.K3s.Args, at >= 0, tt.wantFlag)
			}
			if tt.wantFlag && tt.edit != nil && p.K3s.Args[len(p.K3s.Args)-1] != "--disable=traefik" {
				t.Errorf("the operator's args must stay last: %q", p.K3s.Args)
			}
			if !slices.ContainsFunc(p.Notes, func(n string) bool { return strings.Contains(n, tt.note) }) {
				t.Errorf("notes %q lack %q", p.Notes, tt.note)
			}
		})
	}
	// An agent gets it too.
	p := NewPlan(newCluster(t, 2).config(t, 2, 1, nil), fakeHost{cgroup: 1, k3sVersion: "v1.36.0+k3s1"})
	if p.K3s.Role() != "agent" || !slices.Contains(p.K3s.Args, FailCgroupV1Flag) {
		t.Errorf("agent argv %q lacks %s", p.K3s.Args, FailCgroupV1Flag)
	}
}

func TestHostNotes(t *testing.T) {
	tests := []struct {
		name string
		host fakeHost
		edit func(string) string
		want string
	}{
		{"firewalld", fakeHost{firewalld: true}, nil, "firewalld: active; the appliance's chains"},
		{"no firewalld", fakeHost{}, nil, "firewalld: not active"},
		{"selinux without k3s-selinux", fakeHost{selinux: "enforcing", label: "system_u:object_r:bin_t:s0"}, nil, "k3s-selinux does not label"},
		{"selinux, labelled, no flag", fakeHost{selinux: "enforcing", label: "system_u:object_r:container_runtime_exec_t:s0"}, nil, "add --selinux"},
		{"selinux, labelled, flag", fakeHost{selinux: "enforcing", label: "system_u:object_r:container_runtime_exec_t:s0"},
			func(s string) string { return s + "  server_args: [--selinux]\n" }, "--selinux is set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlan(newCluster(t, 2).config(t, 2, 0, tt.edit), tt.host)
			if !slices.ContainsFunc(p.Notes, func(n string) bool { return strings.Contains(n, tt.want) }) {
				t.Errorf("notes %q lack %q", p.Notes, tt.want)
			}
		})
	}
}

func TestSystemHostReadsTheK3sVersionAndCgroup(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "k3s")
	script := "#!/bin/sh\n[ \"$1\" = --version ] || exit 1\necho 'k3s version v1.36.0+k3s1 (1234abcd)'\necho 'go version go1.25.1'\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := SystemHost{Root: dir}
	if v, err := h.K3sVersion(bin); err != nil || v != "v1.36.0+k3s1" {
		t.Errorf("K3sVersion = %q, %v", v, err)
	}
	if _, err := h.K3sVersion(filepath.Join(dir, "missing")); err == nil {
		t.Error("K3sVersion of a missing binary succeeded")
	}
	if h.CgroupVersion() != 1 {
		t.Error("a root without cgroup.controllers is not cgroup v1")
	}
	os.MkdirAll(filepath.Join(dir, "sys/fs/cgroup"), 0o755)
	os.WriteFile(filepath.Join(dir, "sys/fs/cgroup/cgroup.controllers"), []byte("cpu memory\n"), 0o644)
	if h.CgroupVersion() != 2 {
		t.Error("a root with cgroup.controllers is not cgroup v2")
	}
	if h.SELinux() != "disabled" {
		t.Errorf("SELinux without selinuxfs = %s", h.SELinux())
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		host fakeHost
		edit func(string) string
		want string // "" for no warning
	}{
		{"k3s broken on 3.10", fakeHost{k3sVersion: "v1.24.3+k3s1"}, nil, "k3s v1.24.3+k3s1 does not run pods on kernel 3.10"},
		{"metrics on the loopback", fakeHost{}, func(s string) string { return s + "metrics:\n  enabled: true\n" }, ""},
		{"metrics on every address", fakeHost{}, func(s string) string { return s + "metrics:\n  enabled: true\n  listen: 0.0.0.0:9586\n" }, "0.0.0.0:9586 is reachable from other hosts"},
		{"metrics on a public address", fakeHost{}, func(s string) string { return s + "metrics:\n  enabled: true\n  listen: 203.0.113.10:9586\n" }, "reachable from other hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPlan(newCluster(t, 2).config(t, 2, 0, tt.edit), tt.host)
			got := strings.Join(p.Warnings, "\n")
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("warnings = %q, want %q", got, tt.want)
			}
			var out strings.Builder
			p.Print(&out)
			if tt.want != "" && !strings.Contains(out.String(), "WARNING: ") || !strings.Contains(out.String(), tt.want) {
				t.Errorf("check does not show the warning:\n%s", out.String())
			}
		})
	}
}

// TestAK3sVersionThatLeavesAChildDoesNotHold: a k3s.binary whose --version
// leaves a background child holding its output answers at once.
func TestAK3sVersionThatLeavesAChildDoesNotHold(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "k3s")
	os.WriteFile(bin, []byte("#!/bin/sh\nsleep 120 &\necho 'k3s version v1.36.3+k3s1 (abc)'\n"), 0o755)
	began := time.Now()
	v, err := SystemHost{}.K3sVersion(bin)
	if err != nil || v != "v1.36.3+k3s1" {
		t.Fatalf("K3sVersion = %q, %v", v, err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}
