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
	if !strings.Contains(req, "/bin/sh") {
		t.Errorf("the package does not require /bin/sh, which runs its scriptlets:\n%s", req)
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
		"/usr/share/doc/wgk3s drwxr-xr-x ", // owned: erase removes it
		"/usr/share/doc/wgk3s/LICENSE -rw-r--r-- d",
		"/usr/share/doc/wgk3s/README.md -rw-r--r-- d",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (path mode flags; c = config, n = noreplace, d = doc) (-want +got):\n%s", diff)
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

// TestScriptlets runs the scriptlets against a stub systemctl and appliance, in a mount
// namespace whose /run has /run/systemd/system (systemd is "running").
func TestScriptlets(t *testing.T) {
	need(t, "unshare", "sh")
	if os.Getuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	stub := t.TempDir()
	log := filepath.Join(stub, "calls")
	os.WriteFile(filepath.Join(stub, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755)
	// The appliance too: the real one would clean up this host.
	os.WriteFile(filepath.Join(stub, "appliance"), []byte("#!/bin/sh\necho \"appliance $*\" >> "+log+"\n"), 0o755)
	tests := []struct {
		script, arg string
		want        []string
	}{
		{"postinstall", "1", []string{"daemon-reload"}},                                                    // rpm install
		{"postinstall", "2", []string{"daemon-reload"}},                                                    // rpm upgrade
		{"postinstall", "configure", []string{"daemon-reload"}},                                            // deb
		{"preremove", "0", []string{"--no-reload disable --now wgk3s.service", "appliance cleanup --all"}}, // rpm erase
		{"preremove", "1", nil}, // rpm upgrade
		{"preremove", "remove", []string{"--no-reload disable --now wgk3s.service", "appliance cleanup --all"}}, // deb remove
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
// gpgKey makes an OpenPGP key with gpg --quick-gen-key (algo, usage;
// addSub, if set, adds a subkey with that algorithm and usage) and returns
// the secret and public key files.
func gpgKey(t *testing.T, algo, usage, addSub string) (secret, public string) {
	t.Helper()
	// A short path: gpg-agent's socket lives in the home directory, and a
	// subtest's TempDir can be longer than a socket path may be.
	dir, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", filepath.Join(dir, "gnupg"), "--kill", "gpg-agent").Run()
		os.RemoveAll(dir)
	})
	gnupg := filepath.Join(dir, "gnupg")
	os.Mkdir(gnupg, 0o700)
	gpg := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--batch", "--homedir", gnupg, "--passphrase", "", "--pinentry-mode", "loopback"}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}
	gpg("--quick-gen-key", "wgk3s test <test@example.org>", algo, usage, "never")
	if addSub != "" {
		fpr := ""
		for _, l := range strings.Split(gpg("--with-colons", "--list-secret-keys"), "\n") {
			if f := strings.Split(l, ":"); len(f) > 9 && f[0] == "fpr" && fpr == "" {
				fpr = f[9]
			}
		}
		sub := strings.Fields(addSub)
		gpg("--quick-add-key", fpr, sub[0], sub[1], "never")
	}
	secret = filepath.Join(dir, "secret.asc")
	os.WriteFile(secret, []byte(gpg("--armor", "--export-secret-keys")), 0o600)
	public = filepath.Join(dir, "public.asc")
	os.WriteFile(public, []byte(gpg("--armor", "--export")), 0o644)
	return secret, public
}

// buildSigned runs build.sh for the RPM with RPM_SIGNING_KEY=key.
func buildSigned(t *testing.T, key string) (string, error) {
	t.Helper()
	cmd := exec.Command("./build.sh", "rpm", filepath.Join(t.TempDir(), "out"))
	cmd.Env = append(os.Environ(), "VERSION="+version, "RELEASE=1", "RPM_SIGNING_KEY="+key)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return strings.TrimSpace(string(b)), nil
}

// TestKeysCentOS7CannotVerifyAreRefused: build.sh refuses, before it
// builds, a key whose signatures rpm 4.11 cannot check, and says which
// key works.
func TestKeysCentOS7CannotVerifyAreRefused(t *testing.T) {
	need(t, "go", "gpg")
	for _, tt := range []struct {
		name, algo, usage, sub, want string
	}{
		{"ed25519", "ed25519", "sign", "", "not an RSA key"},
		{"a signing subkey", "rsa2048", "cert", "rsa2048 sign", "signs with a subkey"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key, _ := gpgKey(t, tt.algo, tt.usage, tt.sub)
			out, err := buildSigned(t, key)
			if err == nil || !strings.Contains(out, tt.want) || !strings.Contains(out, "rsa4096 sign never") {
				t.Errorf("build.sh with %s: %v\n%s", tt.name, err, out)
			}
		})
	}
}

func TestSignedRPM(t *testing.T) {
	need(t, "go", "gpg", "rpmkeys")
	dir := t.TempDir()
	key, pub := gpgKey(t, "rsa2048", "sign", "")
	signed, err := buildSigned(t, key)
	if err != nil {
		t.Fatalf("signed build: %v\n%s", err, signed)
	}
	db := filepath.Join(dir, "rpmdb")
	run(t, "rpmkeys", "--dbpath", db, "--import", pub)
	if out := run(t, "rpmkeys", "--dbpath", db, "--checksig", signed); !strings.Contains(out, "signatures OK") {
		t.Errorf("the signed RPM does not verify:\n%s", out)
	}
	if out, _ := exec.Command("rpmkeys", "--dbpath", db, "--checksig", pkg(t, "rpm")).CombinedOutput(); strings.Contains(string(out), "signatures") {
		t.Errorf("the default build is signed:\n%s", out)
	}
}

// TestWithRPM411 checks the RPM the way CentOS 7 reads it, with upstream
// rpm 4.11.3 (../shared/rpm411/build.sh builds it) named by $RPM411, in a
// scratch root and database; skipped without it.
func TestWithRPM411(t *testing.T) {
	rpm411 := os.Getenv("RPM411")
	if rpm411 == "" {
		t.Skip("set RPM411 to rpm 4.11.3's bin/rpm to check the RPM as CentOS 7 reads it (../shared/rpm411/build.sh builds it)")
	}
	if os.Getuid() != 0 {
		t.Skip("rpm --root needs root")
	}
	need(t, "go", "gpg")
	rpm := func(args ...string) (string, error) {
		out, err := exec.Command(rpm411, args...).CombinedOutput()
		return string(out), err
	}
	unsigned := pkg(t, "rpm")
	dir := t.TempDir()

	t.Run("-K checks the digests of the unsigned package", func(t *testing.T) {
		out, err := rpm("-K", unsigned)
		if err != nil || !strings.Contains(out, "sha1 md5 OK") {
			t.Errorf("rpm 4.11 -K: %v\n%s", err, out)
		}
	})
	t.Run("a tampered header or payload is refused", func(t *testing.T) {
		b, _ := os.ReadFile(unsigned)
		header := append([]byte{}, b...)
		i := strings.Index(string(header), "One k3s cluster")
		header[i] = 'X'
		payload := append([]byte{}, b...)
		payload[len(payload)-100] ^= 0xff
		for name, data := range map[string][]byte{"header": header, "payload": payload} {
			p := filepath.Join(dir, name+".rpm")
			os.WriteFile(p, data, 0o644)
			if out, err := rpm("-K", p); err == nil || !strings.Contains(out, "NOT OK") {
				t.Errorf("a tampered %s passes rpm 4.11 -K: %v\n%s", name, err, out)
			}
			if out, err := rpm("--root", t.TempDir(), "-i", "--nodeps", "--noscripts", p); err == nil {
				t.Errorf("a tampered %s installs:\n%s", name, out)
			}
		}
	})
	t.Run("the signed package verifies after rpm --import, with its date", func(t *testing.T) {
		key, pub := gpgKey(t, "rsa2048", "sign", "")
		signed, err := buildSigned(t, key)
		if err != nil {
			t.Fatalf("signed build: %v\n%s", err, signed)
		}
		db := filepath.Join(dir, "keydb")
		if out, err := rpm("--dbpath", db, "--initdb"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := rpm("--dbpath", db, "-K", signed); err == nil || !strings.Contains(out, "MISSING KEYS") {
			t.Errorf("signed, before the key is imported: %v\n%s", err, out)
		}
		if out, err := rpm("--dbpath", db, "--import", pub); err != nil {
			t.Fatalf("rpm 4.11 --import: %v\n%s", err, out)
		}
		out, err := rpm("--dbpath", db, "-K", signed)
		if err != nil || !strings.Contains(out, "rsa sha1 (md5) pgp md5 OK") {
			t.Errorf("rpm 4.11 -K of the signed package: %v\n%s", err, out)
		}
		info, _ := rpm("--dbpath", db, "-qpi", signed)
		if !strings.Contains(info, "RSA/SHA256, ") || strings.Contains(info, "1970") {
			t.Errorf("the signature's date:\n%s", info)
		}
	})
	t.Run("install, upgrade with an edited config, erase", func(t *testing.T) {
		root := t.TempDir()
		if out, err := rpm("--root", root, "--initdb"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// --noscripts: a scriptlet would run the appliance on this host
		// (TestScriptlets runs them against stubs).
		if out, err := rpm("--root", root, "-i", "--nodeps", "--noscripts", unsigned); err != nil {
			t.Fatalf("rpm 4.11 -i: %v\n%s", err, out)
		}
		docs, _ := rpm("--root", root, "-qd", "wgk3s")
		if !strings.Contains(docs, "/usr/share/doc/wgk3s/README.md") {
			t.Errorf("rpm -qd lists no documentation:\n%s", docs)
		}
		os.WriteFile(filepath.Join(root, "etc/wgk3s.yaml"), []byte("# edited\n"), 0o644)
		cmd := exec.Command("./build.sh", "rpm", filepath.Join(t.TempDir(), "v2"))
		cmd.Env = append(os.Environ(), "VERSION=1.2.4", "RELEASE=1")
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("build.sh 1.2.4: %v", err)
		}
		if out, err := rpm("--root", root, "-U", "--nodeps", "--noscripts", strings.TrimSpace(string(b))); err != nil {
			t.Fatalf("rpm 4.11 -U: %v\n%s", err, out)
		}
		if got, _ := os.ReadFile(filepath.Join(root, "etc/wgk3s.yaml")); string(got) != "# edited\n" {
			t.Error("the upgrade replaced the edited /etc/wgk3s.yaml")
		}
		if out, _ := rpm("--root", root, "-q", "wgk3s"); !strings.Contains(out, "wgk3s-1.2.4-1") {
			t.Errorf("after the upgrade: %s", out)
		}
		if out, err := rpm("--root", root, "-e", "--noscripts", "wgk3s"); err != nil {
			t.Fatalf("rpm 4.11 -e: %v\n%s", err, out)
		}
		for _, gone := range []string{"usr/bin/appliance", "usr/share/doc/wgk3s", "usr/lib/systemd/system/wgk3s.service"} {
			if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
				t.Errorf("/%s is left after erase", gone)
			}
		}
		if _, err := os.Stat(filepath.Join(root, "etc/wgk3s.yaml.rpmsave")); err != nil {
			t.Errorf("the edited config was not kept as .rpmsave: %v", err)
		}
	})
}
