// Package rpm_test builds the RPM and the .deb with rpm/build.sh and checks
// them with the real rpm, dpkg-deb and systemd-analyze tools.
package rpm_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const version = "1.2.3"

// built holds the package per format: rpm/build.sh runs once per format
// for the whole test binary, into outDir.
var (
	built  = map[string]string{}
	outDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wgk3s-pkg-")
	if err != nil {
		panic(err)
	}
	outDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func pkg(t *testing.T, format string) string {
	t.Helper()
	if p, ok := built[format]; ok {
		return p
	}
	need(t, "go")
	out := filepath.Join(outDir, format)
	cmd := exec.Command("./build.sh", format, out)
	cmd.Env = append(os.Environ(), "VERSION="+version, "RELEASE=1")
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("build.sh %s: %v\n%s", format, err, b)
	}
	p := strings.TrimSpace(string(b))
	built[format] = p
	return p
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make deps installs it)", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestRPMMetadata(t *testing.T) {
	need(t, "rpm")
	p := pkg(t, "rpm")
	if filepath.Base(p) != "wgk3s-"+version+"-1.x86_64.rpm" {
		t.Errorf("file name %s", filepath.Base(p))
	}
	got := run(t, "rpm", "-qp", "--queryformat", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{PAYLOADCOMPRESSOR}", p)
	if want := "wgk3s|" + version + "|1|x86_64|MIT|gzip"; got != want {
		// gzip: CentOS 7's rpm 4.11 cannot read zstd payloads.
		t.Errorf("metadata = %q, want %q", got, want)
	}
	desc := run(t, "rpm", "-qp", "--queryformat", "%{DESCRIPTION}", p)
	if !strings.Contains(desc, "WireGuard full mesh") || !strings.Contains(desc, "k3s") {
		t.Errorf("description = %q", desc)
	}
	req := run(t, "rpm", "-qpR", p)
	if strings.Contains(req, "libc") {
		t.Errorf("the package requires a libc: %s", req)
	}
	if !strings.Contains(req, "iptables") {
		t.Errorf("the package does not require iptables, which the appliance runs:\n%s", req)
	}
}

func TestRPMFiles(t *testing.T) {
	need(t, "rpm")
	got := strings.Split(strings.TrimRight(run(t, "rpm", "-qp", "--queryformat",
		"[%{FILENAMES} %{FILEMODES:perms} %{FILEFLAGS:fflags}\n]", pkg(t, "rpm")), "\n"), "\n")
	want := []string{
		"/etc/sysconfig/wgk3s -rw-r--r-- cn",
		"/etc/wgk3s drwx------ ",
		"/etc/wgk3s.yaml -rw-r--r-- cn",
		"/usr/bin/appliance -rwxr-xr-x ",
		"/usr/lib/systemd/system/wgk3s.service -rw-r--r-- ",
		"/usr/share/doc/wgk3s/LICENSE -rw-r--r-- ",
		"/usr/share/doc/wgk3s/README.md -rw-r--r-- ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (path mode flags; c = config, n = noreplace) (-want +got):\n%s", diff)
	}
}

func TestRPMInstallsIntoScratchRoot(t *testing.T) {
	need(t, "rpm", "systemd-analyze")
	if os.Getuid() != 0 {
		t.Skip("rpm --root needs root")
	}
	root := t.TempDir()
	run(t, "rpm", "--root", root, "--initdb")
	run(t, "rpm", "--root", root, "-i", "--nodeps", "--noscripts", pkg(t, "rpm"))

	// The unit, the README and the package agree on the paths.
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/wgk3s.service"))
	for _, want := range []string{"ExecStart=/usr/bin/appliance --role ${ROLE} --config /etc/wgk3s.yaml", "EnvironmentFile=/etc/sysconfig/wgk3s"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	for _, f := range []string{"usr/bin/appliance", "etc/wgk3s.yaml", "etc/sysconfig/wgk3s"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/wgk3s")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("/etc/wgk3s: %v %v, want a 0700 directory", fi, err)
	}
	example, _ := os.ReadFile("../configs/wgk3s.yaml")
	if got, _ := os.ReadFile(filepath.Join(root, "etc/wgk3s.yaml")); string(got) != string(example) {
		t.Error("/etc/wgk3s.yaml is not the commented example")
	}
	// No key and no token ship in the package.
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(p, root+"/etc/wgk3s/") {
			t.Errorf("the package ships %s", p)
		}
		return nil
	})

	bin := filepath.Join(root, "usr/bin/appliance")
	t.Run("the binary is static", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("has a program interpreter: dynamically linked")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
			t.Errorf("needs shared libraries %v", libs)
		}
		if out := run(t, bin, "version"); out != "appliance "+version+"\n" {
			t.Errorf("version = %q", out)
		}
	})

	t.Run("systemd-analyze verify accepts the unit", func(t *testing.T) {
		// verify resolves every Exec*= and the dependencies inside --root:
		// it has the package's files and the standard targets and slices,
		// and no /bin/kill (a minimal system has none).
		os.MkdirAll(filepath.Join(root, "usr/lib/systemd/system"), 0o755)
		matches, _ := filepath.Glob("/usr/lib/systemd/system/*.target")
		slices, _ := filepath.Glob("/usr/lib/systemd/system/*.slice")
		run(t, "cp", append(append([]string{"-a"}, append(matches, slices...)...), filepath.Join(root, "usr/lib/systemd/system"))...)
		out, err := exec.Command("systemd-analyze", "verify", "--root="+root, "/usr/lib/systemd/system/wgk3s.service").CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

func TestDeb(t *testing.T) {
	need(t, "dpkg-deb")
	p := pkg(t, "deb")
	got := run(t, "dpkg-deb", "-f", p, "Package", "Version", "Architecture", "Depends")
	if want := "Package: wgk3s\nVersion: " + version + "-1\nArchitecture: amd64\nDepends: iptables\n"; got != want {
		t.Errorf("control = %q, want %q", got, want)
	}
	dir := t.TempDir()
	run(t, "dpkg-deb", "-e", p, dir)
	conffiles, _ := os.ReadFile(filepath.Join(dir, "conffiles"))
	if diff := cmp.Diff("/etc/sysconfig/wgk3s\n/etc/wgk3s.yaml\n", string(conffiles)); diff != "" {
		t.Errorf("conffiles (-want +got):\n%s", diff)
	}
	list := run(t, "dpkg-deb", "-c", p)
	for _, want := range []string{"drwx------ root/root         0", "-rwxr-xr-x root/root", "./usr/bin/appliance", "./etc/wgk3s/"} {
		if !strings.Contains(list, want) {
			t.Errorf("contents lack %q:\n%s", want, list)
		}
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
			t.Errorf("no %s: %v", s, err)
		}
	}
}

// TestScriptlets runs the scriptlets against a stub systemctl, in a mount
// namespace whose /run has /run/systemd/system (systemd is "running").
func TestScriptlets(t *testing.T) {
	need(t, "unshare", "sh")
	if os.Getuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	stub := t.TempDir()
	log := filepath.Join(stub, "calls")
	os.WriteFile(filepath.Join(stub, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755)
	tests := []struct {
		script, arg string
		want        []string
	}{
		{"postinstall", "1", []string{"daemon-reload"}},                                   // rpm install
		{"postinstall", "2", []string{"daemon-reload"}},                                   // rpm upgrade
		{"postinstall", "configure", []string{"daemon-reload"}},                           // deb
		{"preremove", "0", []string{"--no-reload disable --now wgk3s.service"}},           // rpm erase
		{"preremove", "1", nil},                                                           // rpm upgrade
		{"preremove", "remove", []string{"--no-reload disable --now wgk3s.service"}},      // deb remove
		{"preremove", "upgrade", nil},                                                     // deb upgrade
		{"postremove", "0", []string{"daemon-reload"}},                                    // rpm erase
		{"postremove", "1", []string{"daemon-reload", "try-restart wgk3s.service"}},       // rpm upgrade
		{"postremove", "upgrade", []string{"daemon-reload", "try-restart wgk3s.service"}}, // deb upgrade
		{"postremove", "purge", []string{"daemon-reload"}},                                // deb purge
	}
	for _, tt := range tests {
		t.Run(tt.script+" "+tt.arg, func(t *testing.T) {
			os.Remove(log)
			script, _ := filepath.Abs(filepath.Join("scripts", tt.script+".sh"))
			cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
				`mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && PATH="$0:$PATH" sh "$1" "$2"`, stub, script, tt.arg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			b, _ := os.ReadFile(log)
			var got []string
			if s := strings.TrimSpace(string(b)); s != "" {
				got = strings.Split(s, "\n")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("systemctl calls (-want +got):\n%s", diff)
			}
			for _, c := range got {
				if strings.HasPrefix(c, "enable") || strings.HasPrefix(c, "start") {
					t.Errorf("a scriptlet enables or starts the service: %s", c)
				}
			}
		})
	}
}

// TestSignedRPM builds the RPM with a throwaway OpenPGP key and checks it
// the way yum's gpgcheck does; the default build stays unsigned.
func TestSignedRPM(t *testing.T) {
	need(t, "go", "gpg", "rpmkeys")
	dir := t.TempDir()
	gnupg := filepath.Join(dir, "gnupg")
	os.Mkdir(gnupg, 0o700)
	gpg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--batch", "--homedir", gnupg}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	gpg("--passphrase", "", "--quick-gen-key", "wgk3s test <test@example.org>", "rsa2048", "sign", "never")
	key := filepath.Join(dir, "secret.asc")
	os.WriteFile(key, []byte(gpg("--armor", "--export-secret-keys")), 0o600)
	pub := filepath.Join(dir, "public.asc")
	os.WriteFile(pub, []byte(gpg("--armor", "--export")), 0o644)

	cmd := exec.Command("./build.sh", "rpm", filepath.Join(dir, "out"))
	cmd.Env = append(os.Environ(), "VERSION="+version, "RELEASE=1", "RPM_SIGNING_KEY="+key)
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("signed build: %v\n%s", err, b)
	}
	signed := strings.TrimSpace(string(b))
	db := filepath.Join(dir, "rpmdb")
	run(t, "rpmkeys", "--dbpath", db, "--import", pub)
	if out := run(t, "rpmkeys", "--dbpath", db, "--checksig", signed); !strings.Contains(out, "signatures OK") {
		t.Errorf("the signed RPM does not verify:\n%s", out)
	}
	if out, _ := exec.Command("rpmkeys", "--dbpath", db, "--checksig", pkg(t, "rpm")).CombinedOutput(); strings.Contains(string(out), "signatures") {
		t.Errorf("the default build is signed:\n%s", out)
	}
}
