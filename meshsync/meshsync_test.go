package meshsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.DiscardHandler)

func genKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// cluster is a master key and one follower at addr.
type cluster struct {
	master, node wgtypes.Key // private keys
	addr         netip.Addr
	srv          *Server
	tokens       map[string]string // by role
}

func newCluster(t testing.TB, addr string) *cluster {
	t.Helper()
	c := &cluster{master: genKey(t), node: genKey(t), addr: netip.MustParseAddr(addr),
		tokens: map[string]string{"agent": "agent-secret", "server": "server-secret"}}
	c.srv = NewServer(discard, func(n Node) ([]byte, error) { return []byte(c.tokens[n.Role] + "\n"), nil })
	return c
}

func (c *cluster) publish(t testing.TB, data string, nodes ...Node) {
	t.Helper()
	if nodes == nil {
		nodes = []Node{c.nodeEntry()}
	}
	c.srv.Update(Published{Data: []byte(data), Key: c.master, Nodes: nodes})
}

func (c *cluster) nodeEntry() Node {
	return Node{Name: "k3s-node-1", Key: c.node.PublicKey(), Addr: c.addr, Role: "agent"}
}

// request builds a request signed as the node (with key) would sign it.
func (c *cluster) request(method, uri string, key wgtypes.Key, at time.Time) (*http.Request, pairKeys, string) {
	req := httptest.NewRequest(method, uri, nil)
	req.RemoteAddr = netip.AddrPortFrom(c.addr, 40000).String()
	k, err := derive(key, c.master.PublicKey(), key.PublicKey(), c.master.PublicKey())
	if err != nil {
		panic(err)
	}
	return req, k, sign(req, k, key.PublicKey(), at)
}

func serve(s *Server, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

// TestTheKeysAgree: the follower's and the master's derivations give the
// same keys, and another node's key gives others.
func TestTheKeysAgree(t *testing.T) {
	m, n, other := genKey(t), genKey(t), genKey(t)
	onNode, err := derive(n, m.PublicKey(), n.PublicKey(), m.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	onMaster, err := derive(m, n.PublicKey(), n.PublicKey(), m.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if string(onNode.request) != string(onMaster.request) || string(onNode.answer) != string(onMaster.answer) {
		t.Fatal("the two sides derive different keys")
	}
	if string(onNode.request) == string(onNode.answer) {
		t.Fatal("requests and answers share a key")
	}
	forged, _ := derive(other, m.PublicKey(), n.PublicKey(), m.PublicKey())
	if string(forged.request) == string(onMaster.request) {
		t.Fatal("another private key derives the pair's key")
	}
	if _, err := derive(n, wgtypes.Key{}, n.PublicKey(), wgtypes.Key{}); err == nil {
		t.Fatal("an all-zero public key was accepted")
	}
}

// TestOnlyTheNodesAppliancesAreServed: an address is not an identity. A
// request from the node's address without its key (any process or pod
// there), with another key, from another address, replayed, or too old,
// gets nothing.
func TestOnlyTheNodesAppliancesAreServed(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "network: 192.168.2.0/24\n")
	now := time.Now()
	secretFree := func(t *testing.T, w *httptest.ResponseRecorder) {
		t.Helper()
		if b := w.Body.String(); strings.Contains(b, "secret") || strings.Contains(b, "network") {
			t.Errorf("leaked: %q", b)
		}
	}
	for _, path := range []string{PathCluster, PathToken, PathEndpoints} {
		t.Run("no authentication"+path, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.RemoteAddr = "192.168.2.2:40000"
			w := serve(c.srv, req)
			if w.Code != http.StatusForbidden {
				t.Errorf("got %d", w.Code)
			}
			secretFree(t, w)
		})
		t.Run("another key"+path, func(t *testing.T) {
			req, _, _ := c.request(http.MethodGet, path, genKey(t), now)
			w := serve(c.srv, req)
			if w.Code != http.StatusForbidden {
				t.Errorf("got %d", w.Code)
			}
			secretFree(t, w)
		})
		t.Run("the node's public key without its private key"+path, func(t *testing.T) {
			req, _, _ := c.request(http.MethodGet, path, genKey(t), now)
			req.Header.Set(HeaderNode, c.node.PublicKey().String())
			w := serve(c.srv, req)
			if w.Code != http.StatusUnauthorized {
				t.Errorf("got %d", w.Code)
			}
			secretFree(t, w)
		})
		t.Run("another address"+path, func(t *testing.T) {
			req, _, _ := c.request(http.MethodGet, path, c.node, now)
			req.RemoteAddr = "192.168.2.9:40000"
			w := serve(c.srv, req)
			if w.Code != http.StatusForbidden {
				t.Errorf("got %d", w.Code)
			}
			secretFree(t, w)
		})
		t.Run("too old"+path, func(t *testing.T) {
			req, _, _ := c.request(http.MethodGet, path, c.node, now.Add(-MaxSkew-time.Minute))
			w := serve(c.srv, req)
			if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "clock") {
				t.Errorf("got %d %q", w.Code, w.Body.String())
			}
			secretFree(t, w)
		})
	}
	t.Run("a changed revision", func(t *testing.T) {
		req, _, _ := c.request(http.MethodGet, PathCluster+"?have=a", c.node, now)
		req.URL.RawQuery = "have=b"
		req.RequestURI = PathCluster + "?have=b"
		if w := serve(c.srv, req); w.Code != http.StatusUnauthorized {
			t.Errorf("got %d", w.Code)
		}
	})
	t.Run("the node, then the same request replayed", func(t *testing.T) {
		req, k, nonce := c.request(http.MethodGet, PathToken, c.node, now)
		w := serve(c.srv, req)
		if w.Code != http.StatusOK || w.Body.String() != "agent-secret\n" {
			t.Fatalf("the node's own request: %d %q", w.Code, w.Body.String())
		}
		if _, err := verifyAnswer(w.Result().Header, k, nonce, w.Code, w.Body.Bytes()); err != nil {
			t.Errorf("the answer does not verify: %v", err)
		}
		if _, err := verifyAnswer(w.Result().Header, k, newNonce(), w.Code, w.Body.Bytes()); err == nil {
			t.Error("the answer verifies for another request")
		}
		again := serve(c.srv, req)
		if again.Code != http.StatusUnauthorized || !strings.Contains(again.Body.String(), "replayed") {
			t.Errorf("replayed: %d %q", again.Code, again.Body.String())
		}
		secretFree(t, again)
	})
	if st := c.srv.Stats(); st.Denied == 0 || st.Served == 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestTokensByRole: an agent is handed the agent token, a server the
// server token.
func TestTokensByRole(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	server := genKey(t)
	c.publish(t, "x", c.nodeEntry(), Node{Name: "k3s-server-2", Key: server.PublicKey(), Addr: netip.MustParseAddr("192.168.2.3"), Role: "server"})
	req, _, _ := c.request(http.MethodGet, PathToken, c.node, time.Now())
	if w := serve(c.srv, req); w.Body.String() != "agent-secret\n" {
		t.Errorf("agent got %q", w.Body.String())
	}
	req, _, _ = c.request(http.MethodGet, PathToken, server, time.Now())
	req.RemoteAddr = "192.168.2.3:1"
	if w := serve(c.srv, req); w.Body.String() != "server-secret\n" {
		t.Errorf("server got %q", w.Body.String())
	}
	// A node that is handed no token (the master, asking a server that
	// serves it as a follower) is told so: 403 with the reason, not 500.
	s := NewServer(discard, func(n Node) ([]byte, error) {
		return nil, fmt.Errorf("%w: role %s", ErrNoToken, n.Role)
	})
	s.Update(Published{Data: []byte("x"), Key: c.master, Nodes: []Node{{Name: "k3s-master", Key: c.node.PublicKey(), Addr: c.addr, Role: "master"}}})
	req, _, _ = c.request(http.MethodGet, PathToken, c.node, time.Now())
	if w := serve(s, req); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "no token is handed") {
		t.Errorf("the master asking a server for a token: %d %q, want 403", w.Code, w.Body.String())
	}
}

func TestAPollWaitsForTheNextRevision(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "one")
	c.srv.wait = 50 * time.Millisecond
	req, _, _ := c.request(http.MethodGet, PathCluster+"?have="+Revision([]byte("one")), c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusNotModified {
		t.Errorf("nothing new: %d", w.Code)
	}
	c.srv.wait = 10 * time.Second
	done := make(chan *httptest.ResponseRecorder)
	req, _, _ = c.request(http.MethodGet, PathCluster+"?have="+Revision([]byte("one")), c.node, time.Now())
	go func() { done <- serve(c.srv, req) }()
	if !poll.Until(5*time.Second, func() bool {
		return c.srv.AwaitReceived([]wgtypes.Key{c.node.PublicKey()}, Revision([]byte("one")), 0) == nil
	}) {
		t.Fatal("the poll did not arrive")
	}
	began := time.Now()
	c.publish(t, "two")
	w := <-done
	if w.Code != http.StatusOK || w.Body.String() != "two" || time.Since(began) > 5*time.Second {
		t.Errorf("after an update: %d %q in %v", w.Code, w.Body.String(), time.Since(began))
	}
}

// TestConfirm: the master says whether a revision is still the one it
// serves, and AwaitReceived counts a follower that said it takes it.
func TestConfirm(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "one")
	one := Revision([]byte("one"))
	req, _, _ := c.request(http.MethodPost, PathConfirm+"?rev="+one, c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusNoContent {
		t.Fatalf("current revision: %d", w.Code)
	}
	if missing := c.srv.AwaitReceived([]wgtypes.Key{c.node.PublicKey()}, one, 10*time.Millisecond); missing == nil {
		t.Error("counted as received before it said it takes it")
	}
	req, _, _ = c.request(http.MethodPost, PathTaken+"?rev="+one, c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusNoContent {
		t.Fatalf("taken: %d", w.Code)
	}
	if missing := c.srv.AwaitReceived([]wgtypes.Key{c.node.PublicKey()}, one, time.Second); missing != nil {
		t.Errorf("taken but missing: %v", missing)
	}
	c.publish(t, "two")
	req, _, _ = c.request(http.MethodPost, PathConfirm+"?rev="+one, c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusConflict {
		t.Errorf("old revision: %d", w.Code)
	}
	if missing := c.srv.AwaitReceived([]wgtypes.Key{c.node.PublicKey()}, Revision([]byte("two")), 10*time.Millisecond); len(missing) != 1 || missing[0] != "k3s-node-1" {
		t.Errorf("missing = %v", missing)
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

// node is the follower's side: the file it runs and what it refuses.
type node struct {
	mu      sync.Mutex
	data    []byte
	applied atomic.Int32
	checked atomic.Int32
	refuse  func([]byte) error
}

func (n *node) have() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return Revision(n.data)
}

func (n *node) apply(data []byte, confirm func(staging bool) error) error {
	n.checked.Add(1)
	if n.refuse != nil {
		if err := n.refuse(data); err != nil {
			return err
		}
	}
	if err := confirm(false); err != nil {
		return err
	}
	n.mu.Lock()
	n.data = data
	n.mu.Unlock()
	n.applied.Add(1)
	return nil
}

func (c *cluster) client(master netip.AddrPort, n *node) *Client {
	return &Client{Master: master, Log: discard, Have: n.have, Apply: n.apply, Retry: 20 * time.Millisecond,
		Keys: func() (wgtypes.Key, wgtypes.Key) { return c.node, c.master.PublicKey() }}
}

func runClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestClientFollowsAndRefuses(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "rev one")
	master := loopback(t, c.srv)
	n := &node{data: []byte("local"), refuse: func(d []byte) error {
		if strings.Contains(string(d), "drops") {
			return errors.New("the master's file does not name this node")
		}
		return nil
	}}
	cl := c.client(master, n)
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("rev one")) }) {
		t.Fatal("the client did not take the master's file")
	}
	c.publish(t, "rev two")
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("rev two")) }) {
		t.Fatal("the client did not follow a reload")
	}
	c.publish(t, "rev three drops this node")
	if !poll.Until(5*time.Second, func() bool { return cl.Status().Refused != "" }) {
		t.Fatal("the refusal is not in the status")
	}
	checked := n.checked.Load()
	// A refused revision is not asked for again: the next poll waits.
	if !poll.Until(5*time.Second, func() bool {
		return c.srv.AwaitReceived([]wgtypes.Key{c.node.PublicKey()}, Revision([]byte("rev three drops this node")), 0) == nil
	}) {
		t.Fatal("the client did not ask with the refused revision")
	}
	if n.have() != Revision([]byte("rev two")) || n.checked.Load() != checked || !strings.Contains(cl.Status().Refused, "does not name this node") {
		t.Errorf("after a refused file: running %s, checked %d times, status %+v", n.have(), n.checked.Load()-checked, cl.Status())
	}
	c.publish(t, "rev four")
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("rev four")) && cl.Status().Refused == "" }) {
		t.Fatal("the client did not take the next good file")
	}
}

// TestARevertAfterARefusalLeavesBothIdle: the master goes back to the
// file the follower runs (the usual "oops, revert"): the refusal is
// cleared and the follower waits in a long poll instead of asking in a
// loop.
func TestARevertAfterARefusalLeavesBothIdle(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "good")
	c.srv.wait = time.Hour // a poll that waits is visible as no new poll
	master := loopback(t, c.srv)
	n := &node{data: []byte("good"), refuse: func(d []byte) error {
		if strings.Contains(string(d), "bad") {
			return errors.New("not for this node")
		}
		return nil
	}}
	cl := c.client(master, n)
	runClient(t, cl)
	c.publish(t, "bad")
	if !poll.Until(5*time.Second, func() bool { return cl.Status().Refused != "" }) {
		t.Fatal("no refusal")
	}
	c.publish(t, "good") // the revert
	if !poll.Until(5*time.Second, func() bool { return cl.Status().Refused == "" }) {
		t.Fatalf("the refusal stays after the revert: %+v", cl.Status())
	}
	polls := cl.Status().Polls
	served := c.srv.Stats().Served
	time.Sleep(300 * time.Millisecond) // 15 retries' worth: a loop would show
	if got := cl.Status().Polls - polls; got > 1 {
		t.Errorf("%d polls in 300 ms after the revert; want the follower waiting in one", got)
	}
	if got := c.srv.Stats().Served - served; got > 1 {
		t.Errorf("the master answered %d requests in 300 ms after the revert", got)
	}
	if n.applied.Load() != 0 {
		t.Errorf("applied %d files; the follower ran the master's file all along", n.applied.Load())
	}
}

// TestARefusedRevisionIsAskedForAgain after a local change (Changed) and
// after RetryRefused, when the host may have been fixed.
func TestARefusedRevisionIsAskedForAgain(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "needs k3s")
	master := loopback(t, c.srv)
	var fixed atomic.Bool
	n := &node{data: []byte("old"), refuse: func([]byte) error {
		if !fixed.Load() {
			return errors.New("this host cannot run it: k3s.binary /usr/local/bin/k3s does not exist")
		}
		return nil
	}}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	cl := c.client(master, n)
	cl.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	cl.RetryRefused = time.Hour
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return cl.Status().Refused != "" }) {
		t.Fatal("no refusal")
	}
	fixed.Store(true)
	cl.Changed() // a local reload after installing k3s
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("needs k3s")) }) {
		t.Fatalf("not asked for again after a local reload: %+v", cl.Status())
	}

	fixed.Store(false)
	c.publish(t, "needs k3s again")
	if !poll.Until(5*time.Second, func() bool { return cl.Status().Refused != "" }) {
		t.Fatal("no refusal")
	}
	fixed.Store(true)
	checked := n.checked.Load()
	clock.Add(int64(2 * time.Hour)) // the refusal has expired; the next poll asks again
	c.publish(t, "needs k3s again") // (the same file: wakes the waiting poll)
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("needs k3s again")) }) {
		t.Fatalf("not asked for again after RetryRefused: %+v, checked %d", cl.Status(), n.checked.Load()-checked)
	}
}

// TestAStagedFileIsNotAskedForAgain: a file that needs a restart is
// written for the next start and the follower waits for the next one.
func TestAStagedFileIsNotAskedForAgain(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "mode: userspace")
	master := loopback(t, c.srv)
	n := &node{data: []byte("mode: auto"), refuse: func(d []byte) error {
		return fmt.Errorf("interface.mode auto -> userspace: %w", ErrStaged)
	}}
	cl := c.client(master, n)
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return cl.Status().Staged != "" }) {
		t.Fatal("not staged")
	}
	if !poll.Until(5*time.Second, func() bool {
		return c.srv.AwaitReceived([]wgtypes.Key{c.node.PublicKey()}, Revision([]byte("mode: userspace")), 0) == nil
	}) {
		t.Fatal("the client does not wait with the staged revision")
	}
	if st := cl.Status(); st.Refused != "" || !strings.Contains(st.Staged, "interface.mode") || n.checked.Load() != 1 {
		t.Errorf("status %+v, checked %d", st, n.checked.Load())
	}
}

// TestARevisionNoLongerServedIsNotTaken: the master changes its file
// between the answer and the follower's confirmation (a late answer): the
// follower takes nothing, then the current file.
func TestARevisionNoLongerServedIsNotTaken(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "rotated")
	master := loopback(t, c.srv)
	n := &node{data: []byte("old")}
	first := true
	n.refuse = func(d []byte) error {
		if first && string(d) == "rotated" {
			first = false
			c.publish(t, "reverted") // before the confirmation
		}
		return nil
	}
	cl := c.client(master, n)
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("reverted")) }) {
		t.Fatalf("did not take the current file: running %s", n.have())
	}
	if n.applied.Load() != 1 {
		t.Errorf("applied %d files; want only the current one", n.applied.Load())
	}
}

// TestAForgedAnswerIsRefused: a server without the master's key (a
// process on the master's address, or the wrong key in the file) is not
// believed.
func TestAForgedAnswerIsRefused(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "forged")
	master := loopback(t, c.srv)
	n := &node{data: []byte("old")}
	cl := c.client(master, n)
	impostor := genKey(t)
	cl.Keys = func() (wgtypes.Key, wgtypes.Key) { return c.node, impostor.PublicKey() }
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return cl.Status().LastError != "" }) {
		t.Fatal("no error")
	}
	if n.checked.Load() != 0 || !strings.Contains(cl.Status().LastError, "not authenticated by the master's key") && !strings.Contains(cl.Status().LastError, "authentication") {
		t.Errorf("status %+v, checked %d", cl.Status(), n.checked.Load())
	}
}

// TestAClockFarOffIsCorrected: the follower learns the master's time from
// its authenticated refusal and asks again.
func TestAClockFarOffIsCorrected(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "one")
	master := loopback(t, c.srv)
	n := &node{data: []byte("old")}
	cl := c.client(master, n)
	cl.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("one")) }) {
		t.Fatalf("a follower with a clock 3 h off does not sync: %+v", cl.Status())
	}
	// The refusal says which way the node's clock is off.
	for skew, want := range map[time.Duration]string{-3 * time.Hour: "behind the master's", 2 * time.Minute: "ahead of the master's"} {
		req, _, _ := c.request(http.MethodGet, PathCluster, c.node, time.Now().Add(skew))
		if w := serve(c.srv, req); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), want) {
			t.Errorf("a request %s off: %d %q, want %q", skew, w.Code, w.Body.String(), want)
		}
	}
}

// TestTheLastErrorClearsAsSoonAsTheMasterAnswers: after a failure the
// follower asks something answered at once, not only the long poll that
// answers after 25 s.
func TestTheLastErrorClearsAsSoonAsTheMasterAnswers(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "one")
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(l.Addr().String())
	l.Close() // nothing answers there yet
	n := &node{data: []byte("one")}
	cl := c.client(addr, n)
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return cl.Status().LastError != "" }) {
		t.Fatal("no error while the master is away")
	}
	l, err = net.Listen("tcp4", addr.String())
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.srv.Serve(ctx, l); close(done) }()
	defer func() { cancel(); <-done }()
	began := time.Now()
	if !poll.Until(10*time.Second, func() bool { return cl.Status().LastError == "" }) {
		t.Fatalf("the error stays after the master is back: %+v", cl.Status())
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the error cleared %s after the master was back, want within the retry (not the 25 s poll)", took)
	}
}

// TestANodeDroppedIsToldSo: a 403 is not "cannot reach the master".
func TestANodeDroppedIsToldSo(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "one", Node{Name: "other", Key: genKey(t).PublicKey(), Addr: netip.MustParseAddr("192.168.2.9")})
	master := loopback(t, c.srv)
	cl := c.client(master, &node{data: []byte("old")})
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return strings.Contains(cl.Status().LastError, "does not list this node") }) {
		t.Fatalf("status %+v", cl.Status())
	}
}

// TestNoProcessWithoutTheKeyHoldsTheNodesSync: every process and pod on a
// node sends from the node's address. Some of them open connections and
// keep them open, reopening each one the server closes, and send
// unauthenticated requests on others; meanwhile the master publishes new
// files. The node's appliance takes each within 5 s (the README's bound),
// the unauthenticated requests get 403 and their connections are closed,
// and the unproven connections stay within their cap.
func TestNoProcessWithoutTheKeyHoldsTheNodesSync(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "revision 0")
	master := loopback(t, c.srv)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var refusedClosed atomic.Int32
	for range 4 { // holders: 4 × 60 connections, reopened as they close
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []net.Conn
			defer func() {
				for _, cn := range held {
					cn.Close()
				}
			}()
			for {
				select {
				case <-stop:
					return
				default:
				}
				held = slices.DeleteFunc(held, func(cn net.Conn) bool {
					cn.SetReadDeadline(time.Now().Add(time.Millisecond))
					_, err := cn.Read(make([]byte, 1))
					if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
						cn.Close()
						return true
					}
					return false
				})
				for len(held) < 60 {
					cn, err := net.Dial("tcp4", master.String())
					if err != nil {
						break
					}
					held = append(held, cn)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // askers: requests without the key, on keep-alive connections
		defer wg.Done()
		hc := &http.Client{Timeout: 2 * time.Second}
		defer hc.CloseIdleConnections()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+master.String()+PathCluster, nil)
			req.Header.Set(HeaderNode, c.node.PublicKey().String())
			resp, err := hc.Do(req)
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized && resp.Close {
				refusedClosed.Add(1)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	// Let the holders fill what they can before the appliance starts.
	poll.Until(2*time.Second, func() bool { u, _ := c.srv.admission.counts(); return u >= UnprovenPerAddr })
	n := &node{data: []byte("local")}
	runClient(t, c.client(master, n))
	var worst time.Duration
	for i := 1; i <= 5; i++ {
		data := fmt.Sprintf("revision %d", i)
		began := time.Now()
		c.publish(t, data)
		if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte(data)) }) {
			u, p := c.srv.admission.counts()
			t.Fatalf("revision %d not taken within 5 s while other processes hold connections (unproven %d, proven %d)", i, u, p)
		}
		worst = max(worst, time.Since(began))
		if u, _ := c.srv.admission.counts(); u > UnprovenPerAddr {
			t.Errorf("%d unproven connections from one address, cap %d", u, UnprovenPerAddr)
		}
	}
	t.Logf("the node's appliance took every new file within %s while 240 connections were held open and unauthenticated requests sent every 20 ms", worst.Round(time.Millisecond))
	if refusedClosed.Load() == 0 {
		t.Error("no unauthenticated request was answered with its connection closed")
	}
}

func TestEnsureTokenWritesItPrivately(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "x")
	cl := c.client(loopback(t, c.srv), &node{})
	path := filepath.Join(t.TempDir(), "wgk3s", "agent-token")
	if err := EnsureToken(context.Background(), cl, path, discard); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "agent-secret\n" {
		t.Errorf("token = %q", b)
	}
	// An existing token is kept.
	os.WriteFile(path, []byte("mine\n"), 0o600)
	if err := EnsureToken(context.Background(), cl, path, discard); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "mine\n" {
		t.Errorf("an existing token was replaced: %q", b)
	}
}

// BenchmarkSync1000 is the master's cost of 1000 followers: each holds a
// long poll from its own loopback address, then one update reaches all of
// them. It reports the time to the last follower and the heap the waiting
// polls hold.
func BenchmarkSync1000(b *testing.B) {
	const agents = 1000
	m := genKey(b)
	s := NewServer(discard, nil)
	type agent struct {
		key  wgtypes.Key
		keys pairKeys
		hc   *http.Client
	}
	var as []agent
	var nodes []Node
	for i := range agents {
		k := genKey(b)
		addr := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
		nodes = append(nodes, Node{Name: fmt.Sprint("n", i), Key: k.PublicKey(), Addr: addr})
		pk, _ := derive(k, m.PublicKey(), k.PublicKey(), m.PublicKey())
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: addr.AsSlice()}}
		as = append(as, agent{key: k, keys: pk, hc: &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: d.DialContext}}})
	}
	s.Update(Published{Data: []byte(strings.Repeat("x", 100<<10)), Key: m, Nodes: nodes})
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx, l)
	base := "http://" + l.Addr().String()
	var keys []wgtypes.Key
	for _, n := range nodes {
		keys = append(keys, n.Key)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, rev := s.current()
		var wg sync.WaitGroup
		var got atomic.Int32
		for _, a := range as {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, base+PathCluster+"?have="+rev, nil)
				sign(req, a.keys, a.key.PublicKey(), time.Now())
				resp, err := a.hc.Do(req)
				if err == nil {
					readAllLimited(resp.Body, maxFile)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						got.Add(1)
					}
				}
			}()
		}
		if missing := s.AwaitReceived(keys, rev, time.Minute); missing != nil {
			b.Fatalf("%d polls did not arrive", len(missing))
		}
		if i == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapInuse)/agents, "heap-B/waiting-agent")
		}
		s.Update(Published{Data: []byte(strings.Repeat("y", 100<<10) + string(rune('a'+i%26))), Key: m, Nodes: nodes})
		wg.Wait()
		if got.Load() != agents {
			b.Fatalf("%d of %d agents got the update", got.Load(), agents)
		}
	}
	b.StopTimer()
	for _, a := range as {
		a.hc.CloseIdleConnections()
	}
}

// TestAConfirmationCountsOnceDelivered: over a real connection, the
// master counts a follower's confirmation once its answer got there.
func TestAConfirmationCountsOnceDelivered(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "one")
	master := loopback(t, c.srv)
	n := &node{data: []byte("old")}
	runClient(t, c.client(master, n))
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("one")) }) {
		t.Fatal("not taken")
	}
	if !poll.Until(5*time.Second, func() bool {
		c.srv.mu.Lock()
		defer c.srv.mu.Unlock()
		return c.srv.followers[c.node.PublicKey()].confirmed == Revision([]byte("one"))
	}) {
		t.Error("the confirmation was not counted")
	}
}
