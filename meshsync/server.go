// Package meshsync hands the master's cluster file and k3s tokens to the
// other nodes over wg0, authenticated by the nodes' WireGuard keys.
//
// An address proves nothing: every process, user and pod on a node can
// send from its mesh address. So every request carries an HMAC keyed by
// the X25519 secret of the follower's WireGuard private key and the
// master's public key (auth.go), which only root on that node can compute,
// and every answer carries one the follower checks, bound to its request,
// so that it also knows the answer comes from the master's appliance. The
// server listens on the master's wg address only, bound to wg0
// (SO_BINDTODEVICE), and admits connections by the key they prove, not by
// their address (admission.go); followers long-poll it, so a reload on the
// master reaches them within a second, with one idle connection per
// follower in between.
package meshsync

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Paths and headers of the protocol.
const (
	PathCluster    = "/v1/cluster"
	PathConfirm    = "/v1/cluster/confirm"
	PathTaken      = "/v1/cluster/taken"
	PathToken      = "/v1/token"
	HeaderRevision = "Wgk3s-Revision"
	// DefaultWait is how long a poll waits for a new revision.
	DefaultWait = 25 * time.Second
)

// Revision names a cluster file's content: the first 12 hex digits of its
// SHA-256.
func Revision(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// Node is a follower the master serves.
type Node struct {
	Name string
	Key  wgtypes.Key // its WireGuard public key: its identity
	Addr netip.Addr  // its mesh address: its requests come from there only
	// Role says which token it is handed (see Server's token function).
	Role string
	// KeyChangeOnly: the node's previous key while its key change is
	// under way; it is served PathKey only, so that a node whose answer
	// was lost can ask again (and is told yes again).
	KeyChangeOnly bool
}

// Published is what the master serves.
type Published struct {
	Data []byte
	// Key is the master's WireGuard private key: the one its wg0 runs
	// with while this is served.
	Key   wgtypes.Key
	Nodes []Node
}

// ErrNoToken is what a token function returns for a node that is handed
// no token (the master, asking a server): answered 403, with the reason.
var ErrNoToken = errors.New("no token is handed to this node")

// Server serves the master's current cluster file and tokens.
type Server struct {
	log   *slog.Logger
	token func(Node) ([]byte, error)
	wait  time.Duration
	now   func() time.Time

	// cluster is the file; endpoints where the master sees each node
	// from (endpoints.go).
	cluster, endpoints *feed
	admission          *admission

	mu        sync.Mutex
	master    wgtypes.Key // public
	followers map[wgtypes.Key]*follower
	// heard is closed and replaced whenever a follower asks or confirms.
	heard  chan struct{}
	rotate Rotate // key changes (key.go); zero: refused
	// agentToken, if set, hands servers the agent token (SetAgentToken).
	agentToken func() ([]byte, error)
	// view, if set, is the master's view of the mesh (view.go).
	view func() []byte
	// snapshots: the newest sealed snapshot of the master's datastore,
	// or the copies the nodes offer while it restores (snapshots.go).
	snapshots snapshotState
	served    uint64 // authenticated requests answered
	denied    uint64 // requests refused before authentication
}

// follower is a Node and what the server knows of it.
type follower struct {
	Node
	keys   pairKeys
	nonces map[string]time.Time // seen nonces and when they expire
	// seen is the revision it last asked with; confirmed the one it last
	// confirmed before taking it, staged the one it last confirmed
	// before writing it for its next start.
	seen, confirmed, staged string
	// held is the revision of the newest snapshot it keeps.
	held string
}

// NewServer returns a server; token reads the token a node is handed.
func NewServer(log *slog.Logger, token func(Node) ([]byte, error)) *Server {
	return &Server{log: log, token: token, wait: DefaultWait, now: time.Now, cluster: newFeed(nil), endpoints: newFeed(nil),
		admission: newAdmission(), heard: make(chan struct{}), followers: map[wgtypes.Key]*follower{},
		snapshots: snapshotState{feed: newFeed(nil)}}
}

// Update publishes p. Waiting polls answer at once with the new file; the
// returned WaitGroup is done when they have. A follower keeps its replay
// state across updates. A node whose public key gives no shared secret
// (a low-order point) cannot be served and is logged.
func (s *Server) Update(p Published) *sync.WaitGroup {
	master := p.Key.PublicKey()
	next := make(map[wgtypes.Key]*follower, len(p.Nodes))
	s.mu.Lock()
	old, oldMaster := s.followers, s.master
	s.mu.Unlock()
	for _, n := range p.Nodes {
		f := &follower{Node: n, nonces: map[string]time.Time{}}
		if o := old[n.Key]; o != nil {
			f.nonces, f.seen, f.confirmed, f.staged, f.held = o.nonces, o.seen, o.confirmed, o.staged, o.held
			if master == oldMaster {
				f.keys = o.keys
			}
		}
		if f.keys.request == nil {
			k, err := derive(p.Key, n.Key, n.Key, master)
			if err != nil {
				s.log.Error("sync: this node cannot be served", "node", n.Name, "err", err)
				continue
			}
			f.keys = k
		}
		next[n.Key] = f
	}
	s.mu.Lock()
	s.master, s.followers = master, next
	s.mu.Unlock()
	s.admission.serving(len(next))
	answered, _ := s.cluster.set(p.Data, true)
	if answered == nil {
		answered = &sync.WaitGroup{}
	}
	return answered
}

// Stats are the server's counters, for the status report.
type Stats struct {
	Nodes  int
	Served uint64
	Denied uint64
	// Unproven and Proven count the open connections: not yet
	// authenticated, and a node's (admission.go).
	Unproven, Proven int
}

// Stats returns a snapshot.
func (s *Server) Stats() Stats {
	unproven, proven := s.admission.counts()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.followers {
		if !f.KeyChangeOnly {
			n++
		}
	}
	return Stats{Nodes: n, Served: s.served, Denied: s.denied, Unproven: unproven, Proven: proven}
}

// AwaitReceived waits, at most d, until every node in keys has received
// revision rev: it confirmed it (before taking it) or asked again with it
// (taken or refused). It returns the names of those that did not.
func (s *Server) AwaitReceived(keys []wgtypes.Key, rev string, d time.Duration) (missing []string) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		missing = missing[:0]
		for _, k := range keys {
			if f := s.followers[k]; f != nil && f.seen != rev && f.confirmed != rev {
				missing = append(missing, f.Name)
			}
		}
		heard := s.heard
		s.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-heard:
		case <-deadline.C:
			return missing
		}
	}
}

// Staged returns the names of the nodes in keys that confirmed rev only to
// write it for their next start: they run an older file until restarted.
func (s *Server) Staged(keys []wgtypes.Key, rev string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for _, k := range keys {
		if f := s.followers[k]; f != nil && f.staged == rev {
			names = append(names, f.Name)
		}
	}
	return names
}

// answer is what a handler returns; the server signs it.
type answer struct {
	status int
	rev    string
	body   []byte
	// after, if set, runs once the answer is written out.
	after func()
}

func textAnswer(status int, text string) answer {
	return answer{status: status, body: []byte(text + "\n")}
}

// Handler serves the protocol, to authenticated followers only:
//
//	GET  /v1/cluster?have=REV          the file when its revision is not REV;
//	                                   else waits up to 25 s for one, then 304
//	POST /v1/cluster/confirm?rev=REV   204 if REV is still what the master
//	                                   serves, 409 if not; asked just before
//	                                   a follower takes REV
//	POST /v1/cluster/taken?rev=REV     204; the follower, which has the answer
//	                                   to its confirmation, takes REV now
//	                                   (&staging=1: only writes it for its
//	                                   next start)
//	GET  /v1/token                     the k3s token for the node's role
//	GET  /v1/endpoints?have=REV        where the master sees each node
//	                                   from, long-polled like the file
//	POST /v1/key?new=KEY               a node joined by an invite replaces
//	                                   the invite's key (key.go)
//	GET  /v1/view                      the master's view of its peers, for
//	                                   appliance doctor (view.go)
//	GET  /v1/snapshot?have=REV&held=R  the newest sealed snapshot of the
//	                                   master's datastore, long-polled;
//	                                   428 while it restores (snapshots.go)
//	POST /v1/snapshot/offer            a node's newest copy, to a master
//	                                   that restores
//
// A request that does not prove a listed node's key is answered 403 (not
// a node) or 401 (bad or replayed authentication, or a clock too far off)
// after reading its headers only.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathCluster, s.authed(s.serveCluster))
	mux.HandleFunc("POST "+PathConfirm, s.authed(s.serveConfirm))
	mux.HandleFunc("POST "+PathTaken, s.authed(s.serveTaken))
	mux.HandleFunc("GET "+PathToken, s.authed(s.serveToken))
	mux.HandleFunc("GET "+PathEndpoints, s.authed(s.serveEndpoints))
	mux.HandleFunc("POST "+PathKey, s.authed(s.serveKey))
	mux.HandleFunc("GET "+PathView, s.authed(s.serveView))
	mux.HandleFunc("GET "+PathSnapshot, s.authed(s.serveSnapshot))
	mux.HandleFunc("POST "+PathSnapshotOffer, s.authed(s.serveSnapshotOffer))
	return mux
}

func (s *Server) serveCluster(r *http.Request, f *follower) answer {
	have := r.URL.Query().Get("have")
	s.noteHeard(f.Key, func(f *follower) { f.seen = have })
	return s.cluster.poll(r.Context(), have, s.wait)
}

func (s *Server) serveConfirm(r *http.Request, f *follower) answer {
	rev := r.URL.Query().Get("rev")
	_, current := s.cluster.current()
	if rev != current {
		return answer{status: http.StatusConflict, rev: current}
	}
	return answer{status: http.StatusNoContent, rev: current}
}

// serveTaken records that a follower takes (or stages) a revision. A
// follower says so after it has the answer to its confirmation, so that a
// master that changes its key as soon as every follower has said so cuts
// no answer off; it is noted once this answer is written out, for the
// same reason.
func (s *Server) serveTaken(r *http.Request, f *follower) answer {
	rev := r.URL.Query().Get("rev")
	staging := r.URL.Query().Get("staging") == "1"
	return answer{status: http.StatusNoContent, after: func() {
		s.noteHeard(f.Key, func(f *follower) {
			if f.confirmed = rev; staging {
				f.staged = rev
			}
		})
	}}
}

// SetAgentToken lets servers ask for the agent token (to serve agents in
// their turn): GET /v1/token?kind=agent, refused to every other role.
func (s *Server) SetAgentToken(f func() ([]byte, error)) {
	s.mu.Lock()
	s.agentToken = f
	s.mu.Unlock()
}

func (s *Server) serveToken(r *http.Request, f *follower) answer {
	if r.URL.Query().Get("kind") == TokenAgent {
		s.mu.Lock()
		get := s.agentToken
		s.mu.Unlock()
		if get == nil || f.Role != "server" {
			return textAnswer(http.StatusBadRequest, "the agent token is handed to servers only")
		}
		token, err := get()
		if err != nil {
			s.log.Error("sync: cannot read the agent token for a server", "node", f.Name, "err", err)
			return textAnswer(http.StatusInternalServerError, "cannot read the agent token")
		}
		s.log.Info("sync: handed the agent token to a server", "node", f.Name)
		return answer{status: http.StatusOK, body: token}
	}
	token, err := s.token(f.Node)
	if errors.Is(err, ErrNoToken) {
		return textAnswer(http.StatusForbidden, err.Error())
	}
	if err != nil {
		s.log.Error("sync: cannot read the token for a node", "node", f.Name, "err", err)
		return textAnswer(http.StatusInternalServerError, "the master cannot read the token")
	}
	s.log.Info("sync: handed its token to a node", "node", f.Name, "role", f.Role)
	return answer{status: http.StatusOK, body: token}
}

func (s *Server) current() (data []byte, rev string) { return s.cluster.current() }

// noteHeard records what a follower told and wakes AwaitReceived.
func (s *Server) noteHeard(key wgtypes.Key, note func(*follower)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.followers[key]; f != nil {
		note(f)
	}
	close(s.heard)
	s.heard = make(chan struct{})
}

// authed authenticates a request (see authenticate), runs h and signs its
// answer for the follower, bound to the request's nonce.
func (s *Server) authed(h func(*http.Request, *follower) answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, nonce, refusal := s.authenticate(r)
		if f == nil {
			s.count(&s.denied)
			w.Header().Set("Connection", "close") // it holds nothing (admission.go)
			http.Error(w, refusal, http.StatusForbidden)
			return
		}
		a := textAnswer(http.StatusUnauthorized, refusal)
		switch {
		case refusal != "":
			w.Header().Set("Connection", "close")
		case f.KeyChangeOnly && r.URL.Path != PathKey:
			a = textAnswer(http.StatusForbidden, "this key is being replaced: only its key change is answered")
		default:
			s.count(&s.served)
			proven(r.Context(), f.Key)
			a = h(r, f)
		}
		ts := strconv.FormatInt(s.now().Unix(), 10)
		w.Header().Set(HeaderTime, ts)
		w.Header().Set(HeaderRevision, a.rev)
		w.Header().Set(HeaderAuth, base64.StdEncoding.EncodeToString(answerMAC(f.keys, nonce, a.status, ts, a.rev, a.body)))
		if a.status == http.StatusOK {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		w.WriteHeader(a.status)
		w.Write(a.body)
		if a.after != nil {
			http.NewResponseController(w).Flush()
			a.after()
		}
	}
}

func (s *Server) count(c *uint64) {
	s.mu.Lock()
	*c++
	s.mu.Unlock()
}

// maxNonces bounds the replay state kept per follower; a follower asks
// about once per poll, so this is far more than one sends in 2*MaxSkew.
const maxNonces = 4096

// authenticate returns the follower a request proves to come from, a copy
// taken under the lock, and the request's nonce. f is nil when the
// request does not name a listed node or does not come from its address
// (the answer is then a plain 403); refusal is non-empty when it names one
// but its authentication fails (the answer is then a signed 401, so that a
// follower with a wrong clock learns the master's time).
func (s *Server) authenticate(r *http.Request) (f *follower, nonce, refusal string) {
	key, err := wgtypes.ParseKey(r.Header.Get(HeaderNode))
	if err != nil {
		return nil, "", "not a node of this cluster"
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil, "", "not a node of this cluster"
	}
	nonce = r.Header.Get(HeaderNonce)
	ts := r.Header.Get(HeaderTime)
	got, _ := base64.StdEncoding.DecodeString(r.Header.Get(HeaderAuth))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	live := s.followers[key]
	if live == nil || live.Addr != ap.Addr().Unmap() {
		return nil, "", "not a node of this cluster"
	}
	cp := *live
	f = &cp
	if len(nonce) != 32 || !hmac.Equal(got, requestMAC(f.keys, r.Method, r.URL.RequestURI(), r.Header.Get(HeaderNode), ts, nonce)) {
		return f, nonce, "bad authentication"
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return f, nonce, "bad authentication"
	}
	if skew := time.Unix(sec, 0).Sub(now); skew > MaxSkew || skew < -MaxSkew {
		return f, nonce, "clock: " + clockOff(skew)
	}
	if len(live.nonces) >= 256 {
		for n, exp := range live.nonces {
			if now.After(exp) {
				delete(live.nonces, n)
			}
		}
	}
	if _, replayed := live.nonces[nonce]; replayed {
		return f, nonce, "replayed request"
	}
	if len(live.nonces) >= maxNonces {
		return f, nonce, "too many requests"
	}
	live.nonces[nonce] = now.Add(2 * MaxSkew)
	return f, nonce, ""
}

// Serve answers on l until ctx is cancelled. Connections are admitted by
// the key they prove (admission.go); a client has 5 s to send its headers
// (at most 8 KiB), an answer (a long poll included) must be written within
// DefaultWait + 10 s, and an idle keep-alive connection is closed after
// 60 s.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      s.wait + 10*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext:       withConn,
	}
	go func() {
		<-ctx.Done()
		srv.Close() // polls in flight end; followers ask again
	}()
	if err := srv.Serve(listener{Listener: l, a: s.admission}); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// clockOff says how far the requester's clock is from this one's: skew is
// its time minus ours.
func clockOff(skew time.Duration) string {
	if skew < 0 {
		return "the node's clock is " + (-skew).Round(time.Second).String() + " behind the master's"
	}
	return "the node's clock is " + skew.Round(time.Second).String() + " ahead of the master's"
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
