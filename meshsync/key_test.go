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
// current one; the master's Accept decides, Then runs after the answer;
// without Rotate, with a bad key, or unauthenticated, nothing changes.
func TestKeyChange(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "x")
	next := genKey(t).PublicKey()
	ask := func(key wgtypes.Key, newKey string) int {
		req, _, _ := c.request(http.MethodPost, PathKey+"?new="+url.QueryEscape(newKey), key, time.Now())
		return serve(c.srv, req).Code
	}
	var accepted []wgtypes.Key
	then := 0
	refuse := error(nil)
	c.srv.SetRotate(Rotate{
		Accept: func(n Node, k wgtypes.Key) error {
			if n.Name != "k3s-node-1" || n.Key != c.node.PublicKey() {
				t.Errorf("Accept got %+v", n)
			}
			if refuse != nil {
				return refuse
			}
			accepted = append(accepted, k)
			return nil
		},
		Then: func() { then++ },
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
	refuse = errors.New("no open invite for k3s-node-1")
	if code := ask(c.node, next.String()); code != http.StatusConflict || len(accepted) != 0 || then != 0 {
		t.Errorf("refused: %d, accepted %v, then %d", code, accepted, then)
	}
	refuse = nil
	if code := ask(c.node, next.String()); code != http.StatusNoContent || len(accepted) != 1 || accepted[0] != next || then != 1 {
		t.Errorf("accepted: %d, accepted %v, then %d", code, accepted, then)
	}
}

func TestKeyChangeRefusedWithoutRotate(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "x")
	req, _, _ := c.request(http.MethodPost, PathKey+"?new="+url.QueryEscape(genKey(t).PublicKey().String()), c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusForbidden {
		t.Errorf("no Rotate: %d, want 403", w.Code)
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
