// Package status is the appliance's report of itself: the model that
// `appliance status` prints, the root-only unix socket that serves it while
// the appliance runs, and the Prometheus metrics derived from it.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wgk3s/wgk3s/doctor"
)

// DefaultSocket is where a running appliance serves its status.
const DefaultSocket = "/run/wgk3s/status.sock"

// ReachableWithin is how recent a handshake must be for a peer to count as
// reachable: WireGuard's REJECT_AFTER_TIME, after which a session is dead.
const ReachableWithin = 180 * time.Second

// Report is one snapshot of a running appliance.
type Report struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// Config is the cluster file the appliance runs (absolute).
	Config     string    `json:"config,omitempty"`
	Version    string    `json:"version"`
	Started    time.Time `json:"started"`
	Mode       string    `json:"mode"`
	ModeReason string    `json:"mode_reason"`
	Interface  string    `json:"interface"`
	// Recreations counts the times the interface was deleted by someone
	// else and recreated.
	Recreations int      `json:"interface_recreations"`
	Address     string   `json:"address"`
	ListenPort  int      `json:"listen_port"`
	PublicKey   string   `json:"public_key"`
	Peers       []Peer   `json:"peers"`
	Firewall    Firewall `json:"firewall"`
	K3s         K3s      `json:"k3s"`
	Reloads     Reloads  `json:"reloads"`
	Sync        *Sync    `json:"sync,omitempty"`
	// PeersUnavailable says why Peers is empty though the file has peers
	// (the device was busy applying a reload).
	PeersUnavailable string `json:"peers_unavailable,omitempty"`
	// Relay is what this node relayed for others (userspace mode).
	Relay *Relay `json:"relay,omitempty"`
	// Taken is when this report was made: a report asked for while the
	// appliance is busy is its last one (status answers within a second).
	Taken time.Time `json:"taken,omitzero"`
	// Health is doctor's last report (the appliance runs it every
	// minute, and whenever `appliance doctor` asks).
	Health *doctor.Report `json:"health,omitempty"`
	// Snapshots: a lone master's datastore kept by the other nodes.
	Snapshots *Snapshots `json:"snapshots,omitempty"`
}

// Snapshots is the master's datastore kept by the other nodes: on the
// master, what it took and who holds it; elsewhere, the copies kept.
type Snapshots struct {
	// Role is "taking" (a lone master), "keeping" (the others), or "off".
	Role string `json:"role"`
	// Off says why none are taken here (Role "off", or a master with
	// servers: etcd keeps the datastore on each of them).
	Off string `json:"off,omitempty"`
	// IntervalSeconds is how often the master takes one (if changed).
	IntervalSeconds float64 `json:"interval_seconds,omitempty"`
	// Last is the newest snapshot: taken by this master, or kept here.
	Last *SnapshotCopy `json:"last,omitempty"`
	// Holders are the nodes that keep the master's newest snapshot.
	Holders []string `json:"holders,omitempty"`
	// Kept counts the copies this node keeps.
	Kept int `json:"kept,omitempty"`
	// Checked is when the master last looked at its datastore.
	Checked time.Time `json:"checked,omitzero"`
	// Problem is what an operator must know (no copy on two nodes
	// within two intervals; a snapshot that cannot be taken).
	Problem string `json:"problem,omitempty"`
	// Restore is a restore under way on a new master.
	Restore *Restore `json:"restore,omitempty"`
}

// SnapshotCopy is one sealed snapshot.
type SnapshotCopy struct {
	Taken time.Time `json:"taken"`
	Bytes int       `json:"bytes"`
}

// Restore is a master waiting for the nodes' copies.
type Restore struct {
	Offered []string `json:"offered"`
	Waiting []string `json:"waiting"`
	Done    string   `json:"done,omitempty"`
}

// Sync is the cluster file's hand-over over wg0: served by the master,
// followed by the others.
type Sync struct {
	// Role is "serving" (the master), "following", or "following and
	// serving" (a server).
	Role   string `json:"role"`
	Master string `json:"master"`
	// Following names the server a follower asks while the master does
	// not answer.
	Following string `json:"following,omitempty"`
	// Revision is the file this node runs (serves, on the master).
	Revision    string    `json:"revision"`
	Nodes       int       `json:"nodes,omitempty"`
	LastContact time.Time `json:"last_contact,omitzero"`
	LastApplied time.Time `json:"last_applied,omitzero"`
	Refused     string    `json:"refused,omitempty"`
	// Staged is a master's file written for the next start (it needs a
	// restart).
	Staged    string `json:"staged,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Polls counts a follower's requests for the master's file.
	Polls uint64 `json:"polls,omitempty"`
	// Served and Denied count the master's authenticated answers and the
	// requests it refused before authentication.
	Served uint64 `json:"served,omitempty"`
	Denied uint64 `json:"denied,omitempty"`
}

// Peer is one WireGuard peer as the device reports it.
type Peer struct {
	Name       string   `json:"name"`
	PublicKey  string   `json:"public_key"`
	Endpoint   string   `json:"endpoint,omitempty"`
	AllowedIPs []string `json:"allowed_ips"`
	// LatestHandshake is zero when there has been none.
	LatestHandshake time.Time `json:"latest_handshake,omitzero"`
	// HandshakeAgeSeconds is -1 when there has been no handshake.
	HandshakeAgeSeconds float64 `json:"handshake_age_seconds"`
	ReceiveBytes        int64   `json:"receive_bytes"`
	TransmitBytes       int64   `json:"transmit_bytes"`
	// Reachable: something came back from the peer recently (within two
	// keepalives and 5 s; a handshake within 180 s without keepalives),
	// over whatever path.
	Reachable bool `json:"reachable"`
	// Path is "direct" or "relayed" (then Via names the relay).
	Path string `json:"path"`
	Via  string `json:"via,omitempty"`
	// LearnedEndpoint is where the master sees the peer from, used
	// because the file gives it no endpoint, or a direct address found
	// (on this node's own network) that wins over the file's.
	LearnedEndpoint string `json:"learned_endpoint,omitempty"`
	// RTTMillis is the last probe's round trip to the peer (0: none).
	RTTMillis float64 `json:"rtt_ms,omitempty"`
}

// PathTo says how this node reaches the peer named name: "direct",
// "relayed via NAME", or "" when it has no such peer; and the peer.
func (r Report) PathTo(name string) (string, Peer) {
	for _, p := range r.Peers {
		if p.Name == name {
			if p.Via != "" {
				return p.Path + " via " + p.Via, p
			}
			return p.Path, p
		}
	}
	return "", Peer{}
}

// Relay counts the datagrams this node forwarded between two other
// nodes, still encrypted.
type Relay struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	Dropped uint64 `json:"dropped"`
	// Entries are the sessions it routes now (its index table).
	Entries int `json:"entries"`
}

// Firewall is the firewall's state.
type Firewall struct {
	Backend string `json:"backend"`
	Egress  string `json:"egress"`
}

// K3s is the supervised child.
type K3s struct {
	Binary        string   `json:"binary"`
	Args          []string `json:"args"`
	Running       bool     `json:"running"`
	PID           int      `json:"pid,omitempty"`
	UptimeSeconds float64  `json:"uptime_seconds"`
	Restarts      int      `json:"restarts"`
	LastExit      string   `json:"last_exit,omitempty"`
	// RestartInSeconds is set while k3s waits out its restart backoff.
	RestartInSeconds float64 `json:"restart_in_seconds,omitempty"`
}

// Reloads counts SIGHUP reloads.
type Reloads struct {
	Total    int    `json:"total"`
	Failures int    `json:"failures"`
	Last     string `json:"last_error,omitempty"`
	// Running is when the reload being applied now began (zero: none).
	Running time.Time `json:"running,omitzero"`
}

// Serve answers GET /status with source() as JSON on l (from Listen)
// until ctx is cancelled, then removes the socket; reload may be nil
// (see Handlers).
func Serve(ctx context.Context, l net.Listener, source func() Report, reload func() error) error {
	return ServeWith(ctx, l, Handlers{Report: source, Reload: reload})
}

// Handlers are what the status socket serves.
type Handlers struct {
	// Report is GET /status.
	Report func() Report
	// Reload, if set, is POST /reload: it re-reads the cluster file, as
	// SIGHUP does, and answers when it is done: 200, or 422 with why it
	// was rejected.
	Reload func() error
	// Doctor, if set, is GET /doctor: `appliance doctor`'s report.
	Doctor func(ctx context.Context) doctor.Report
	// Ping, if set, is POST /ping?node=NAME: one answer of
	// `appliance ping`; an error is a name that is no peer (404).
	Ping func(ctx context.Context, node string) (doctor.PingAnswer, error)
}

// ServeWith serves h on l until ctx is cancelled, then removes the
// socket. /debug/pprof/ serves Go's profiles (heap, allocs, CPU,
// goroutines).
func ServeWith(ctx context.Context, l net.Listener, h Handlers) error {
	path := l.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, h.Report()) })
	// Go's profiles, for root on this socket only (never on the network):
	// curl --unix-socket /run/wgk3s/status.sock http://wgk3s/debug/pprof/heap
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	if h.Reload != nil {
		mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
			if err := h.Reload(); err != nil {
				http.Error(w, err.Error(), http.StatusUnprocessableEntity)
				return
			}
			io.WriteString(w, "reloaded\n")
		})
	}
	if h.Doctor != nil {
		mux.HandleFunc("GET /doctor", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, h.Doctor(r.Context())) })
	}
	if h.Ping != nil {
		mux.HandleFunc("POST /ping", func(w http.ResponseWriter, r *http.Request) {
			ans, err := h.Ping(r.Context(), r.URL.Query().Get("node"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			writeJSON(w, ans)
		})
	}
	err := serveHTTP(ctx, l, mux)
	os.Remove(path)
	return err
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// serveHTTP serves h on l until ctx is cancelled, then shuts down, giving
// requests in flight two seconds.
func serveHTTP(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// lockPath is the lock a running appliance holds beside its status
// socket, for its whole run: the kernel releases it when the process
// ends, however it ends. It tells a busy appliance (the lock is held, the
// socket does not answer in time) from an absent one.
func lockPath(socket string) string { return socket + ".lock" }

// ErrRunning is another appliance holding the lock.
var ErrRunning = errors.New("another running appliance holds this node")

// Listen opens the status socket at path, readable by root only, and
// takes the lock beside it. A stale socket from a killed run is replaced;
// a held lock or a live socket means another appliance is running, which
// is an error: starting a second one would tear down the first one's
// interface and rules.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(lockPath(path), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w (its lock %s is held); fix: stop it first (systemctl stop wgk3s)", ErrRunning, lockPath(path))
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		lock.Close()
		return nil, fmt.Errorf("%s is served by another running appliance; fix: stop it first (systemctl stop wgk3s)", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		lock.Close()
		return nil, err
	}
	return &lockedListener{Listener: l, lock: lock}, nil
}

// lockedListener releases the lock when the socket closes.
type lockedListener struct {
	net.Listener
	lock *os.File
	once sync.Once
}

func (l *lockedListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.lock.Close() })
	return err
}

// Running says whether an appliance runs with its status socket at path:
// it holds the lock beside it. It needs root (the directory is root's).
func Running(path string) (bool, error) {
	f, err := os.Open(lockPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return false, fmt.Errorf("permission denied on %s: it is root's only; fix: run this as root (sudo)", lockPath(path))
		}
		return false, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false, nil
}

func client(path string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

// dialError explains why the appliance at path could not be asked.
func dialError(path, command string, err error) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("permission denied on %s: the status socket is root's only; fix: run it as root (sudo appliance %s)", path, command)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the appliance on %s is there but did not answer in time (busy?); try again, and see journalctl -u wgk3s: %w", path, err)
	}
	return fmt.Errorf("no running appliance answers on %s (is the service running? systemctl status wgk3s): %w", path, err)
}

// Reload asks the appliance serving path to re-read its cluster file and
// waits until it has: the error says why a reload was rejected. It is
// systemd's ExecReload, which then needs nothing but the appliance itself
// (a minimal system has no /bin/kill).
func Reload(path string) error {
	resp, err := client(path, 2*time.Minute).Post("http://appliance/reload", "text/plain", nil)
	if err != nil {
		return dialError(path, "reload", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reload rejected, the running configuration is unchanged: %s", strings.TrimSpace(string(body)))
	}
	return nil
}

// Fetch asks the appliance serving path for its report.
func Fetch(path string) (Report, error) { return FetchWithin(path, 5*time.Second) }

// FetchWithin is Fetch with a timeout: an appliance answers within a
// second, with its last report while busy.
func FetchWithin(path string, timeout time.Duration) (Report, error) {
	resp, err := client(path, timeout).Get("http://appliance/status")
	if err != nil {
		return Report{}, dialError(path, "status", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Report{}, fmt.Errorf("%s answered %s", path, resp.Status)
	}
	var r Report
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return Report{}, fmt.Errorf("reading the status: %w", err)
	}
	return r, nil
}

// Doctor asks the appliance serving path for doctor's report.
func Doctor(path string) (doctor.Report, error) {
	var r doctor.Report
	resp, err := client(path, 20*time.Second).Get("http://appliance/doctor")
	if err != nil {
		return r, dialError(path, "doctor", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("%s answered %s (an appliance too old for doctor?)", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("reading doctor's report: %w", err)
	}
	return r, nil
}

// PeerError is a ping of a name the appliance has no peer of; it says
// which names it has.
type PeerError struct{ Reason string }

func (e *PeerError) Error() string { return e.Reason }

// Ping asks the appliance serving path to ping node once.
func Ping(path, node string) (doctor.PingAnswer, error) {
	var a doctor.PingAnswer
	resp, err := client(path, 10*time.Second).Post("http://appliance/ping?node="+url.QueryEscape(node), "text/plain", nil)
	if err != nil {
		return a, dialError(path, "ping", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return a, &PeerError{strings.TrimSpace(string(body))}
	}
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("%s answered %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return a, fmt.Errorf("reading the ping's answer: %w", err)
	}
	return a, nil
}

// PingEach pings node count times, one a second, over the appliance at
// path and hands each answer to each; it fails when none was answered.
func PingEach(path, node string, count int, each func(doctor.PingAnswer)) error {
	answered := 0
	for i := range count {
		start := time.Now()
		a, err := Ping(path, node)
		if err != nil {
			return err
		}
		each(a)
		if a.Answered() {
			answered++
		}
		if i+1 < count {
			time.Sleep(max(time.Second-time.Since(start), 0)) // one a second, like ping
		}
	}
	if answered == 0 {
		return fmt.Errorf("%s did not answer %d ping(s)", node, count)
	}
	return nil
}
