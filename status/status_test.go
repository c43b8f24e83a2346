package status

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/doctor"
)

func sample() Report {
	return Report{
		Node: "k3s-master", Role: "master", Mode: "userspace", ModeReason: "kernel 3.10.0 is older than 5.15.0",
		Interface: "wg0", Address: "192.168.2.1/24", ListenPort: 5418,
		Peers: []Peer{
			{Name: "k3s-node-1", Endpoint: "203.0.113.20:5418", AllowedIPs: []string{"192.168.2.2/32"},
				HandshakeAgeSeconds: 12, ReceiveBytes: 2048, TransmitBytes: 1 << 20, Reachable: true},
			{Name: "k3s-node-2", AllowedIPs: []string{"192.168.2.3/32"}, HandshakeAgeSeconds: -1},
		},
		K3s:     K3s{Running: true, PID: 42, Restarts: 3, LastExit: "exit status 1", UptimeSeconds: 90},
		Reloads: Reloads{Total: 2, Failures: 1},
	}
}

func TestServeAndFetch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "status.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Serve(ctx, l, sample, nil) }()
	got, err := Fetch(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sample(), got); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	// A second appliance must not take over a live socket.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another running appliance") {
		t.Errorf("Listen on a live socket: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
	if _, err := Fetch(path); err == nil || !strings.Contains(err.Error(), "is the service running") {
		t.Errorf("Fetch without a server: %v", err)
	}
}

// TestReloadWaitsForTheResult: `appliance reload` returns when the reload
// is done, with the reason when it was rejected.
func TestReloadWaitsForTheResult(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	results := []error{nil, errors.New("/etc/wgk3s.yaml:4: interface.mtu: 99 is out of range")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Serve(ctx, l, sample, func() error { calls++; return results[calls-1] })
	}()
	if err := Reload(path); err != nil {
		t.Errorf("a good reload: %v", err)
	}
	err = Reload(path)
	if err == nil || !strings.Contains(err.Error(), "reload rejected, the running configuration is unchanged: /etc/wgk3s.yaml:4: interface.mtu") {
		t.Errorf("a rejected reload: %v", err)
	}
	cancel()
	<-done
	if calls != 2 {
		t.Errorf("reload ran %d times", calls)
	}
	if err := Reload(path); err == nil || !strings.Contains(err.Error(), "is the service running") {
		t.Errorf("without an appliance: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // a killed run leaves the file behind
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	r := sample()
	r.Started = time.Unix(1000, 0)
	Print(&b, r, time.Unix(1000+3600, 0))
	out := b.String()
	for _, want := range []string{
		"k3s-master (master)", "up 1h0m0s", "userspace: kernel 3.10.0",
		"running, pid 42", "3 restart(s), last exit: exit status 1", "2, 1 failed",
		"k3s-node-1", "203.0.113.20:5418", "12s ago", "2.0 KiB", "1.0 MiB", "yes",
		"k3s-node-2", "(none)", "never",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestPrintSaysKThreeSRestarts: during k3s's restart backoff the status
// says when it starts again, not "not running".
func TestPrintSaysKThreeSRestarts(t *testing.T) {
	var b bytes.Buffer
	r := sample()
	r.K3s.Running, r.K3s.PID, r.K3s.RestartInSeconds = false, 0, 7.6
	Print(&b, r, time.Now())
	if out := b.String(); !strings.Contains(out, "k3s        restarting in 8s") || strings.Contains(out, "not running") {
		t.Errorf("during the backoff:\n%s", out)
	}
}

func TestMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ServeMetrics(ctx, l, func() Report {
		r := sample()
		r.Health = &doctor.Report{Findings: []doctor.Finding{{Check: "mtu", Node: "k3s-node-1"}, {Check: "nat", Node: "k3s-master", Note: true}}}
		return r
	})
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`wgk3s_peer_last_handshake_seconds{peer="k3s-node-1"} 12`,
		`wgk3s_peer_last_handshake_seconds{peer="k3s-node-2"} -1`,
		`wgk3s_peer_receive_bytes_total{peer="k3s-node-1"} 2048`,
		`wgk3s_peer_transmit_bytes_total{peer="k3s-node-1"} 1.048576e+06`,
		`wgk3s_peer_reachable{peer="k3s-node-2"} 0`,
		`wgk3s_k3s_restarts_total 3`,
		`wgk3s_reloads_total 2`,
		`wgk3s_reload_failures_total 1`,
		`wgk3s_wireguard_mode{mode="userspace"} 1`,
		`wgk3s_doctor_problems{check="mtu",node="k3s-node-1"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestFetchSaysPermissionDenied: a user who may not open the root-only
// socket is told so, not that no appliance runs.
func TestFetchSaysPermissionDenied(t *testing.T) {
	if os.Getuid() == 0 {
		// Root opens the socket whatever its mode: run the check as nobody.
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("needs setpriv (util-linux) to drop root")
		}
	}
	// A directory everyone may enter, holding a socket only root may open.
	dir, err := os.MkdirTemp("", "wgk3s-status-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "status.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go http.Serve(l, http.NotFoundHandler())
	if os.Getuid() != 0 {
		_, err := Fetch(sock)
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("Fetch = %v", err)
		}
		return
	}
	// As root: run this test binary's helper mode as nobody, from a copy
	// nobody may execute.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "status.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestFetchHelper$")
	cmd.Env = append(os.Environ(), "WGK3S_FETCH_SOCKET="+sock)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "permission denied on "+sock) || !strings.Contains(string(out), "sudo appliance status") {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
}

// TestFetchHelper runs inside TestFetchSaysPermissionDenied's child.
func TestFetchHelper(t *testing.T) {
	sock := os.Getenv("WGK3S_FETCH_SOCKET")
	if sock == "" {
		t.Skip("helper for TestFetchSaysPermissionDenied")
	}
	_, err := Fetch(sock)
	fmt.Println(err)
}

func TestPathTo(t *testing.T) {
	r := Report{Peers: []Peer{{Name: "home-1", Path: "relayed", Via: "k3s-master"}, {Name: "node-1", Path: "direct"}}}
	for name, want := range map[string]string{"home-1": "relayed via k3s-master", "node-1": "direct", "nope": ""} {
		if got, p := r.PathTo(name); got != want || (want != "" && p.Name != name) {
			t.Errorf("PathTo(%s) = %q, %q; want %q", name, got, p.Name, want)
		}
	}
}

// Doctor's report and ping's answers come over the socket; a name that
// is no peer is a PeerError with the appliance's reason.
func TestDoctorAndPingOverTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	report := doctor.Report{Node: "node-1", Findings: []doctor.Finding{{Node: "node-2", Check: "mtu", Problem: "small", Fix: "interface.mtu: 1320"}}}
	pings := 0
	h := Handlers{Report: sample, Doctor: func(context.Context) doctor.Report { return report },
		Ping: func(_ context.Context, node string) (doctor.PingAnswer, error) {
			if node != "node-2" {
				return doctor.PingAnswer{}, errors.New(`"x" is no peer of node-1; its peers are: node-2`)
			}
			pings++
			return doctor.PingAnswer{Node: node, Path: "direct", ProbeRTT: time.Millisecond}, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ServeWith(ctx, l, h) }()
	defer func() { cancel(); <-done }()
	got, err := Doctor(path)
	if err != nil || got.Problems() != 1 || got.Findings[0].Fix != "interface.mtu: 1320" {
		t.Fatalf("doctor: %+v, %v", got, err)
	}
	var answers []doctor.PingAnswer
	if err := PingEach(path, "node-2", 2, func(a doctor.PingAnswer) { answers = append(answers, a) }); err != nil || len(answers) != 2 || pings != 2 {
		t.Fatalf("ping: %v %+v", err, answers)
	}
	var pe *PeerError
	if _, err := Ping(path, "x"); !errors.As(err, &pe) || !strings.Contains(pe.Reason, "its peers are: node-2") {
		t.Fatalf("ping of no peer: %v", err)
	}
}
