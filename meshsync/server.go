// Package meshsync hands the master's cluster file and join token to the
// other nodes over wg0. WireGuard authenticates every peer by its key and
// admits only its listed address, so a connection that arrives on wg0 from
// a node's mesh address comes from that node, and an answer from the
// master's mesh address comes from the master. The server listens on the
// master's wg address only, bound to wg0 (SO_BINDTODEVICE), and answers
// the nodes listed in its current file; agents long-poll it, so a reload
// on the master reaches them within a second, with one idle connection per
// agent in between.
package meshsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Paths and headers of the protocol.
const (
	PathCluster    = "/v1/cluster"
	PathToken      = "/v1/token"
	HeaderRevision = "X-Wgk3s-Revision"
	// DefaultWait is how long a poll waits for a new revision.
	DefaultWait = 25 * time.Second
)

// Revision names a cluster file's content: the first 12 hex digits of its
// SHA-256.
func Revision(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// Server serves the master's current cluster file and token.
type Server struct {
	log   *slog.Logger
	token func() ([]byte, error)
	wait  time.Duration

	mu      sync.Mutex
	data    []byte
	rev     string
	allowed map[netip.Addr]bool
	changed chan struct{} // closed and replaced by Update
	// waiting counts the polls waiting on changed, until they answered.
	waiting *sync.WaitGroup
	// seen is the revision each address last asked with; polled is
	// closed and replaced on every request.
	seen   map[netip.Addr]string
	polled chan struct{}
}

// NewServer returns a server; token reads the join token when a node asks.
func NewServer(log *slog.Logger, token func() ([]byte, error)) *Server {
	return &Server{log: log, token: token, wait: DefaultWait, changed: make(chan struct{}), waiting: &sync.WaitGroup{},
		seen: map[netip.Addr]string{}, polled: make(chan struct{})}
}

// Update publishes a validated cluster file and the addresses of the nodes
// that may fetch it (every node but the master). Waiting polls answer at
// once with the new file; the returned WaitGroup is done when they have.
func (s *Server) Update(data []byte, nodes []netip.Addr) *sync.WaitGroup {
	allowed := make(map[netip.Addr]bool, len(nodes))
	for _, a := range nodes {
		allowed[a] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data, s.rev, s.allowed = data, Revision(data), allowed
	answered := s.waiting
	close(s.changed)
	s.changed, s.waiting = make(chan struct{}), &sync.WaitGroup{}
	return answered
}

func (s *Server) current() (data []byte, rev string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data, s.rev
}

// waitFor returns the current file, or, when its revision is have, the
// channel that closes on the next Update and done to call once answered.
func (s *Server) waitFor(have string) (data []byte, rev string, changed <-chan struct{}, done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rev != have {
		return s.data, s.rev, nil, func() {}
	}
	s.waiting.Add(1)
	return s.data, s.rev, s.changed, s.waiting.Done
}

// admitted reports whether the request comes from a listed node's mesh
// address.
func (s *Server) admitted(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := ap.Addr().Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	return addr, s.allowed[addr]
}

// note records the revision a request asks with.
func (s *Server) note(r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[ap.Addr().Unmap()] = r.URL.Query().Get("have")
	close(s.polled)
	s.polled = make(chan struct{})
}

// AwaitPolls waits, at most d, until every address in addrs has asked
// again with revision rev: each has then received that file (a follower
// asks with the revision it was last handed, taken or refused).
func (s *Server) AwaitPolls(addrs []netip.Addr, rev string, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		all := true
		for _, a := range addrs {
			all = all && s.seen[a] == rev
		}
		polled := s.polled
		s.mu.Unlock()
		if all {
			return true
		}
		select {
		case <-polled:
		case <-deadline.C:
			return false
		}
	}
}

// Handler serves the protocol:
//
//	GET /v1/cluster?have=REV  the file when its revision is not REV; else
//	                          waits up to 25 s for one, then 304
//	GET /v1/token             the join token
//
// Both answer 403 to anyone but the nodes in the current file.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathCluster, func(w http.ResponseWriter, r *http.Request) {
		s.note(r)
		if _, ok := s.admitted(r); !ok {
			http.Error(w, "not a node of this cluster", http.StatusForbidden)
			return
		}
		data, rev, changed, done := s.waitFor(r.URL.Query().Get("have"))
		defer done()
		if changed != nil {
			timer := time.NewTimer(s.wait)
			defer timer.Stop()
			select {
			case <-changed:
				data, rev = s.current()
			case <-timer.C:
				w.WriteHeader(http.StatusNotModified)
				return
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set(HeaderRevision, rev)
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(data)
	})
	mux.HandleFunc("GET "+PathToken, func(w http.ResponseWriter, r *http.Request) {
		addr, ok := s.admitted(r)
		if !ok {
			http.Error(w, "not a node of this cluster", http.StatusForbidden)
			return
		}
		token, err := s.token()
		if err != nil {
			s.log.Error("sync: cannot read the token for a node", "node", addr, "err", err)
			http.Error(w, "the master cannot read its token", http.StatusInternalServerError)
			return
		}
		s.log.Info("sync: handed the token to a node", "node", addr)
		w.Write(token)
	})
	return mux
}

// Serve answers on l until ctx is cancelled.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close() // polls in flight end; agents ask again
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Listen opens the server's socket on the master's mesh address, bound to
// the WireGuard interface: a packet with a mesh source address that
// arrives on any other interface never reaches it.
func Listen(addr netip.AddrPort, device string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = bindToDevice(int(fd), device) })
		return errors.Join(err, serr)
	}}
	l, err := lc.Listen(context.Background(), "tcp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("sync: listening on %s (%s): %w", addr, device, err)
	}
	return l, nil
}

// readAllLimited reads at most n bytes of r.
func readAllLimited(r io.Reader, n int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, n+1))
	if err == nil && int64(len(data)) > n {
		err = fmt.Errorf("more than %d bytes", n)
	}
	return data, err
}

func trimToken(b []byte) []byte { return []byte(strings.TrimSpace(string(b))) }
