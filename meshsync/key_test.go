package meshsync

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/poll"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestKeyChange: a node hands the master its next key, signed with its
// current one; the master's Accept decides: yes (204), never (409, a
// Refusal), or not now (503); without Rotate, with a bad or low-order key,
// or unauthenticated, nothing changes. While the change is under way the
// node's old key is served the key change only.
func TestKeyChange(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "x")
	next := genKey(t).PublicKey()
	ask := func(key wgtypes.Key, newKey string) int {
		req, _, _ := c.request(http.MethodPost, PathKey+"?new="+url.QueryEscape(newKey), key, time.Now())
		return serve(c.srv, req).Code
	}
	var accepted []wgtypes.Key
	var answer error
	c.srv.SetRotate(Rotate{
		Accept: func(_ context.Context, n Node, k wgtypes.Key) error {
			if n.Name != "k3s-node-1" || n.Key != c.node.PublicKey() {
				t.Errorf("Accept got %+v", n)
			}
			if answer != nil {
				return answer
			}
			accepted = append(accepted, k)
			return nil
		},
	})
	for name, bad := range map[string]string{"not a key": "abc", "the same key": c.node.PublicKey().String(), "zero": wgtypes.Key{}.String(),
		"one, a low-order point": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "p, a low-order point": "7f///////////////////////////////////////38="} {
		if code := ask(c.node, bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
	if code := ask(genKey(t), next.String()); code != http.StatusForbidden {
		t.Errorf("another key's request: %d, want 403", code)
	}
	answer = &Refusal{Reason: "no open invite for k3s-node-1"}
	if code := ask(c.node, next.String()); code != http.StatusConflict || len(accepted) != 0 {
		t.Errorf("refused: %d, accepted %v", code, accepted)
	}
	answer = errors.New("cannot write the cluster file")
	if code := ask(c.node, next.String()); code != http.StatusServiceUnavailable || len(accepted) != 0 {
		t.Errorf("failed: %d, accepted %v", code, accepted)
	}
	answer = nil
	if code := ask(c.node, next.String()); code != http.StatusNoContent || len(accepted) != 1 || accepted[0] != next {
		t.Errorf("accepted: %d, accepted %v", code, accepted)
	}
	// The file now names the new key; the old one is served its key
	// change only (an answer lost on the way is asked for again).
	old := c.nodeEntry()
	old.KeyChangeOnly = true
	newEntry := c.nodeEntry()
	newEntry.Key = next
	c.publish(t, "with the new key", newEntry, old)
	if code := ask(c.node, next.String()); code != http.StatusNoContent || len(accepted) != 2 {
		t.Errorf("asked again with the old key: %d, accepted %v", code, accepted)
	}
	req, _, _ := c.request(http.MethodGet, PathCluster, c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusForbidden {
		t.Errorf("the old key asked for the file: %d, want 403", w.Code)
	}
	if n := c.srv.Stats().Nodes; n != 1 {
		t.Errorf("Stats counts %d nodes, want 1 (the old key is not a node)", n)
	}
}

func TestKeyChangeRefusedWithoutRotate(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "x")
	req, _, _ := c.request(http.MethodPost, PathKey+"?new="+url.QueryEscape(genKey(t).PublicKey().String()), c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "only the master") {
		t.Errorf("no Rotate: %d %s, want 403", w.Code, w.Body)
	}
}

// TestFollowerTurnsToAServer: when the master stops answering, the follower
// asks the next source (a server that serves the same file) and takes its
// revisions; its status says whom it follows.
func TestFollowerTurnsToAServer(t *testing.T) {
	c := newCluster(t, "127.0.0.1")
	c.publish(t, "rev one")
	ml, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mctx, stopMaster := context.WithCancel(context.Background())
	mdone := make(chan struct{})
	go func() { c.srv.Serve(mctx, ml); close(mdone) }()
	t.Cleanup(func() { stopMaster(); <-mdone })
	master := netip.MustParseAddrPort(ml.Addr().String())

	serverKey := genKey(t)
	s2 := NewServer(discard, func(Node) ([]byte, error) { return []byte("agent-secret\n"), nil })
	s2.Update(Published{Data: []byte("rev one"), Key: serverKey, Nodes: []Node{c.nodeEntry()}})
	server := loopback(t, s2)

	n := &node{data: []byte("local")}
	cl := c.client(master, n)
	cl.Sources = func() []Source {
		return []Source{{Name: "k3s-master", Addr: master, Key: c.master.PublicKey()}, {Name: "k3s-server-1", Addr: server, Key: serverKey.PublicKey()}}
	}
	runClient(t, cl)
	if !poll.Until(5*time.Second, func() bool { return n.have() == Revision([]byte("rev one")) }) {
		t.Fatal("the master's file was not taken")
	}
	stopMaster()
	<-mdone
	s2.Update(Published{Data: []byte("rev two"), Key: serverKey, Nodes: []Node{c.nodeEntry()}})
	if !poll.Until(10*time.Second, func() bool { return n.have() == Revision([]byte("rev two")) }) {
		t.Fatalf("the server's file was not taken; status %+v", cl.Status())
	}
	if st := cl.Status(); !strings.Contains(st.Following, "k3s-server-1") {
		t.Errorf("status following %q", st.Following)
	}
	// A token from the server, and the agent token to servers only.
	if tok, err := cl.FetchToken(context.Background()); err != nil || string(tok) != "agent-secret" {
		t.Errorf("token from the server: %q, %v", tok, err)
	}
	s2.SetAgentToken(func() ([]byte, error) { return []byte("agent-secret"), nil })
	if _, err := cl.fetchToken(context.Background(), TokenAgent); err == nil || !strings.Contains(err.Error(), "servers only") {
		t.Errorf("an agent asking for the agent token by kind: %v, want a refusal", err)
	}
}
