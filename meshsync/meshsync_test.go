package meshsync

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.DiscardHandler)

func get(t *testing.T, s *Server, from, url string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, url, nil)
	req.RemoteAddr = from
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

func TestOnlyListedNodesAreServed(t *testing.T) {
	s := NewServer(discard, func() ([]byte, error) { return []byte("K10secret\n"), nil })
	s.Update([]byte("network: 192.168.2.0/24\n"), []netip.Addr{netip.MustParseAddr("192.168.2.2")})
	for _, from := range []string{"192.168.2.9:40000", "192.168.2.1:40000", "203.0.113.20:40000", "garbage"} {
		for _, path := range []string{PathCluster, PathToken} {
			if w := get(t, s, from, path); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "secret") || strings.Contains(w.Body.String(), "network") {
				t.Errorf("%s from %s: %d %q", path, from, w.Code, w.Body.String())
			}
		}
	}
	w := get(t, s, "192.168.2.2:40000", PathCluster)
	if w.Code != http.StatusOK || w.Body.String() != "network: 192.168.2.0/24\n" || w.Header().Get(HeaderRevision) != Revision([]byte("network: 192.168.2.0/24\n")) {
		t.Errorf("cluster for a node: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	if w := get(t, s, "192.168.2.2:40000", PathToken); w.Code != http.StatusOK || w.Body.String() != "K10secret\n" {
		t.Errorf("token for a node: %d %q", w.Code, w.Body.String())
	}
}

func TestAPollWaitsForTheNextRevision(t *testing.T) {
	s := NewServer(discard, nil)
	nodes := []netip.Addr{netip.MustParseAddr("192.168.2.2")}
	s.Update([]byte("one"), nodes)
	s.wait = 50 * time.Millisecond
	if w := get(t, s, "192.168.2.2:1", PathCluster+"?have="+Revision([]byte("one"))); w.Code != http.StatusNotModified {
		t.Errorf("nothing new: %d", w.Code)
	}
	s.wait = 10 * time.Second
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- get(t, s, "192.168.2.2:1", PathCluster+"?have="+Revision([]byte("one"))) }()
	time.Sleep(50 * time.Millisecond) // the poll is waiting
	began := time.Now()
	s.Update([]byte("two"), nodes)
	w := <-done
	if w.Code != http.StatusOK || w.Body.String() != "two" || time.Since(began) > time.Second {
		t.Errorf("after an update: %d %q in %v", w.Code, w.Body.String(), time.Since(began))
	}
}

// loopback serves s on 127.0.0.1 for real clients.
func loopback(t *testing.T, s *Server) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return netip.MustParseAddrPort(l.Addr().String())
}

type follower struct {
	mu      sync.Mutex
	data    []byte
	applied atomic.Int32
	refuse  func([]byte) error
}

func (f *follower) have() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Revision(f.data)
}

func (f *follower) apply(data []byte) error {
	if f.refuse != nil {
		if err := f.refuse(data); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.data = data
	f.mu.Unlock()
	f.applied.Add(1)
	return nil
}

func runClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestClientFollowsAndRefuses(t *testing.T) {
	s := NewServer(discard, nil)
	s.Update([]byte("rev one"), []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	master := loopback(t, s)
	f := &follower{data: []byte("local"), refuse: func(d []byte) error {
		if strings.Contains(string(d), "drops") {
			return errors.New("the master's file does not name this node")
		}
		return nil
	}}
	c := &Client{Master: master, Log: discard, Have: f.have, Apply: f.apply, Retry: 10 * time.Millisecond}
	runClient(t, c)
	if !poll.Until(5*time.Second, func() bool { return f.have() == Revision([]byte("rev one")) }) {
		t.Fatal("the client did not take the master's file")
	}
	s.Update([]byte("rev two"), []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if !poll.Until(5*time.Second, func() bool { return f.have() == Revision([]byte("rev two")) }) {
		t.Fatal("the client did not follow a reload")
	}
	s.Update([]byte("rev three drops this node"), []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if !poll.Until(5*time.Second, func() bool { return c.Status().Refused != "" }) {
		t.Fatal("the refusal is not in the status")
	}
	n := f.applied.Load()
	time.Sleep(200 * time.Millisecond) // a refused revision must not be asked for in a loop
	if f.have() != Revision([]byte("rev two")) || f.applied.Load() != n || !strings.Contains(c.Status().Refused, "does not name this node") {
		t.Errorf("after a refused file: running %s, status %+v", f.have(), c.Status())
	}
	s.Update([]byte("rev four"), []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if !poll.Until(5*time.Second, func() bool { return f.have() == Revision([]byte("rev four")) && c.Status().Refused == "" }) {
		t.Fatal("the client did not take the next good file")
	}
}

func TestEnsureTokenWritesItPrivately(t *testing.T) {
	s := NewServer(discard, func() ([]byte, error) { return []byte("K10secret\n"), nil })
	s.Update([]byte("x"), []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	master := loopback(t, s)
	path := filepath.Join(t.TempDir(), "wgk3s", "token")
	if err := EnsureToken(context.Background(), master, path, discard); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "K10secret\n" {
		t.Errorf("token = %q", b)
	}
	// An existing token is kept.
	os.WriteFile(path, []byte("mine\n"), 0o600)
	if err := EnsureToken(context.Background(), master, path, discard); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "mine\n" {
		t.Errorf("an existing token was replaced: %q", b)
	}
}

// BenchmarkSync1000 is the master's cost of 1000 agents: each holds a
// long poll, then one update reaches all of them. It reports the time to
// the last agent and the heap the waiting polls hold.
func BenchmarkSync1000(b *testing.B) {
	const agents = 1000
	s := NewServer(discard, nil)
	loopbackAddr := netip.MustParseAddr("127.0.0.1")
	s.Update([]byte(strings.Repeat("x", 100<<10)), []netip.Addr{loopbackAddr})
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx, l)
	url := "http://" + l.Addr().String() + PathCluster + "?have="
	tr := &http.Transport{MaxIdleConnsPerHost: agents, MaxConnsPerHost: agents}
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, rev := s.current()
		var wg sync.WaitGroup
		var got atomic.Int32
		for range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := hc.Get(url + rev)
				if err == nil {
					readAllLimited(resp.Body, maxFile)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						got.Add(1)
					}
				}
			}()
		}
		time.Sleep(200 * time.Millisecond) // the polls are waiting
		if i == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapInuse)/agents, "heap-B/waiting-agent")
		}
		s.Update([]byte(strings.Repeat("y", 100<<10)+string(rune('a'+i%26))), []netip.Addr{loopbackAddr})
		wg.Wait()
		if got.Load() != agents {
			b.Fatalf("%d of %d agents got the update", got.Load(), agents)
		}
	}
	b.StopTimer()
	tr.CloseIdleConnections()
}
