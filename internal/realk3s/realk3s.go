// Package realk3s prepares what a real k3s needs to run in the simulated
// clouds (internal/testnet machines) with no network beyond them: the
// programs the offline build of k3s does not bundle, an image for pods
// and for their sandboxes, and the flags that keep k3s from touching the
// test host. `make real-test` and `make demo` with WGK3S_K3S_BINARY use it.
//
// A k3s release bundles containerd's shim, runc and its CNI plugins and
// pulls rancher/mirrored-pause; the build from ../shared/k3s/build.sh is
// the k3s binary alone, and nothing can be pulled here. So:
//
//   - containerd-shim-runc-v2 and flannel's CNI plugin are found beside the
//     k3s binary (build them as the README says), runc and the other CNI
//     plugins from Debian (runc, containernetworking-plugins);
//   - the image is busybox (Debian's busybox-static) as a docker archive in
//     k3s's agent images directory, which k3s imports when it starts;
//     the same image, tagged as the pause image, is every pod's sandbox;
//   - this test host's root lacks CAP_SYS_RESOURCE, which containerd needs
//     to give a pod's sandbox an oom_score_adj below its own (-998); a
//     drop-in of k3s's containerd configuration sets restrict_oom_score_adj
//     (what k3s itself sets when it runs in a user namespace);
//   - flannel's CNI plugin (containernetworking/plugins v0.9.1, the last
//     with it) speaks CNI up to 0.4.0 and k3s's conflist says 1.0.0, so the
//     "flannel" on PATH is a wrapper that hands it the configuration as
//     0.4.0 and its result back as 1.0.0. k3s v1.36.3's --flannel-cni-conf
//     would be the way, but that flag is read and never used there
//     (pkg/agent/flannel/setup.go reads nodeConfig.Flannel.CNIConfFile,
//     which nothing sets).
package realk3s

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Images the pods run.
const (
	Image      = "docker.io/library/busybox:wgk3s"
	PauseImage = "docker.io/wgk3s/pause:1"
)

// Paths inside a node.
const (
	ImagesTar = "/var/lib/rancher/k3s/agent/images/wgk3s-busybox.tar"
	// ContainerdDropIn is imported by k3s's containerd configuration
	// (config-v3.toml.d/*.toml beside its template).
	ContainerdDropIn = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.d/wgk3s.toml"
	// Kubeconfig is the master's admin kubeconfig.
	Kubeconfig = "/etc/rancher/k3s/k3s.yaml"
)

// Tools are the programs a node needs besides the k3s binary.
type Tools struct {
	K3s, Shim, Flannel, Runc, Busybox string
	CNIDir                            string // Debian's CNI plugins
}

// Find locates the tools for the k3s binary k3s, or says what is missing
// and how to get it.
func Find(k3s string) (Tools, error) {
	t := Tools{K3s: k3s, Shim: filepath.Join(filepath.Dir(k3s), "containerd-shim-runc-v2"),
		Flannel: filepath.Join(filepath.Dir(k3s), "cni", "flannel"), Busybox: "/bin/busybox", CNIDir: "/usr/lib/cni"}
	var missing []error
	for what, path := range map[string]string{
		"the k3s binary (WGK3S_K3S_BINARY)":                           t.K3s,
		"containerd-shim-runc-v2 beside it (README: A real k3s)":      t.Shim,
		"flannel's CNI plugin in cni/ beside it (README: A real k3s)": t.Flannel,
		"busybox (Debian's busybox-static)":                           t.Busybox,
		"the CNI plugins (Debian's containernetworking-plugins)":      filepath.Join(t.CNIDir, "host-local"),
	} {
		if _, err := os.Stat(path); err != nil {
			missing = append(missing, fmt.Errorf("%s: %s is missing", what, path))
		}
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		missing = append(missing, errors.New("runc (Debian's runc) is not on PATH"))
	}
	t.Runc = runc
	return t, errors.Join(missing...)
}

// BinDir fills dir with what goes first on a node's PATH: containerd,
// kubectl, ctr and crictl (k3s by another name: it runs as each), the
// shim, runc, and the CNI plugins
// (k3s takes its CNI directory from where host-local is on PATH).
func (t Tools) BinDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	links := map[string]string{"kubectl": t.K3s, "ctr": t.K3s, "crictl": t.K3s, "containerd": t.K3s, "k3s": t.K3s,
		"containerd-shim-runc-v2": t.Shim, "runc": t.Runc}
	plugins, _ := filepath.Glob(filepath.Join(t.CNIDir, "*"))
	for _, p := range plugins {
		links[filepath.Base(p)] = p
	}
	for name, target := range links {
		os.Remove(filepath.Join(dir, name))
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	wrapper := "#!/bin/sh\n# flannel's plugin from containernetworking/plugins v0.9.1 speaks CNI 0.4.0: it gets the\n" +
		"# 1.0.0 configuration as 0.4.0, and its result (0.4.0's is 1.0.0's with a field more) is given back as 1.0.0.\n" +
		`out=$(sed -E 's/"cniVersion": *"1\.0\.0"/"cniVersion":"0.4.0"/g' | ` + t.Flannel + ")\nrc=$?\n" +
		`printf '%s\n' "$out" | sed -E 's/"cniVersion": *"0\.4\.0"/"cniVersion":"1.0.0"/g'` + "\nexit $rc\n"
	return os.WriteFile(filepath.Join(dir, "flannel"), []byte(wrapper), 0o755)
}

// ContainerdConfig is the drop-in at ContainerdDropIn.
const ContainerdConfig = `version = 3

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
`

// Args are the flags every node's k3s gets from these tests, beside the
// appliance's own: nothing that needs an image the tests do not have
// (traefik, coredns, metrics-server, local-path, servicelb), the pause
// image above, and kube-proxy left off the host-wide
// conntrack settings (conntrack-max-per-core 0 and the TCP timeouts 0
// mean "leave as they are").
func Args(server bool) []string {
	args := []string{"--pause-image=" + PauseImage,
		"--kube-proxy-arg=conntrack-max-per-core=0",
		"--kube-proxy-arg=conntrack-tcp-timeout-established=0s",
		"--kube-proxy-arg=conntrack-tcp-timeout-close-wait=0s"}
	if server {
		args = append(args, "--disable=traefik,coredns,metrics-server,local-storage,servicelb")
	}
	return args
}

// ImageArchive returns a docker archive (docker save's format, which k3s
// imports from its agent images directory) with one busybox layer, tagged
// Image (a shell) and PauseImage (it sleeps: a pod's sandbox).
func ImageArchive(busybox string) ([]byte, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	mod := time.Unix(0, 0)
	for _, d := range []string{"bin/", "www/", "tmp/", "etc/"} {
		lw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mod})
	}
	lw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: mod})
	lw.Write(bin)
	for _, applet := range []string{"sh", "ping", "sleep", "wget", "httpd", "nc", "ip", "cat", "echo", "hostname", "ls"} {
		lw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mod})
	}
	page := []byte("wgk3s ok\n")
	lw.WriteHeader(&tar.Header{Name: "www/index.html", Mode: 0o644, Size: int64(len(page)), ModTime: mod})
	lw.Write(page)
	passwd := []byte("root:x:0:0:root:/:/bin/sh\n")
	lw.WriteHeader(&tar.Header{Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: mod})
	lw.Write(passwd)
	if err := lw.Close(); err != nil {
		return nil, err
	}
	layerSum := sha256.Sum256(layer.Bytes())
	layerID := hex.EncodeToString(layerSum[:])

	type config struct {
		Architecture string         `json:"architecture"`
		OS           string         `json:"os"`
		Config       map[string]any `json:"config"`
		RootFS       map[string]any `json:"rootfs"`
	}
	rootfs := map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}}
	images := []struct {
		tag    string
		config config
	}{
		{Image, config{"amd64", "linux", map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sh"}}, rootfs}},
		{PauseImage, config{"amd64", "linux", map[string]any{"Env": []string{"PATH=/bin"}, "Entrypoint": []string{"/bin/sleep", "2147483647"}}, rootfs}},
	}
	var out bytes.Buffer
	w := tar.NewWriter(&out)
	add := func(name string, data []byte) {
		w.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mod})
		w.Write(data)
	}
	add(layerID+"/layer.tar", layer.Bytes())
	type entry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []entry
	for _, img := range images {
		cfg, _ := json.Marshal(img.config)
		sum := sha256.Sum256(cfg)
		name := hex.EncodeToString(sum[:]) + ".json"
		add(name, cfg)
		manifest = append(manifest, entry{Config: name, RepoTags: []string{img.tag}, Layers: []string{layerID + "/layer.tar"}})
	}
	m, _ := json.Marshal(manifest)
	add("manifest.json", m)
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
