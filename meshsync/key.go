package meshsync

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PathKey is where a node joined by an invite hands the master the public
// key that replaces the invite's: POST /v1/key?new=KEY, authenticated with
// the invite's key (the query is signed), so that the code's key works
// once and no longer.
const PathKey = "/v1/key"

// KeyChangeGrace is how long the master keeps a node's old key on wg0 after
// it said yes to the node's key change, so that the answer reaches the
// node under the old key. The node switches a little after it: its first
// handshake with the new key then finds the master ready for it.
const KeyChangeGrace = time.Second

// Rotate is what the master does with a key change: accept checks it and
// records it (the node's entry in the cluster file) or says why not; then
// runs once the answer is written out (the master's reload, which moves
// the node's peer to the new key).
type Rotate struct {
	Accept func(n Node, next wgtypes.Key) error
	Then   func()
}

// SetRotate enables PathKey; without it the master refuses key changes.
func (s *Server) SetRotate(r Rotate) {
	s.mu.Lock()
	s.rotate = r
	s.mu.Unlock()
}

func (s *Server) serveKey(r *http.Request, f *follower) answer {
	s.mu.Lock()
	rot := s.rotate
	s.mu.Unlock()
	if rot.Accept == nil {
		return textAnswer(http.StatusForbidden, "this master takes no key change")
	}
	next, err := configs.ParsePublicKey(r.URL.Query().Get("new"))
	if err != nil || next == f.Key {
		return textAnswer(http.StatusBadRequest, "new: not a new WireGuard public key")
	}
	if err := rot.Accept(f.Node, next); err != nil {
		s.log.Warn("sync: refused a node's key change", "node", f.Name, "err", err)
		return textAnswer(http.StatusConflict, err.Error())
	}
	s.log.Info("sync: a node's key changes", "node", f.Name, "from", f.Key.String(), "to", next.String())
	return answer{status: http.StatusNoContent, after: rot.Then}
}

// RotateKey asks the master to replace this node's public key with next.
// Once it answered yes, the master's peer for this node moves to next: the
// node must switch to the matching private key.
func (c *Client) RotateKey(ctx context.Context, next wgtypes.Key) error {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: c.Transport}
	defer hc.CloseIdleConnections()
	status, _, body, err := c.doAt(ctx, hc, c.master(), http.MethodPost, PathKey+"?new="+url.QueryEscape(next.String()))
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return fmt.Errorf("the master refused the key change (%d): %s", status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Reach sends one authenticated request that changes nothing and reports
// whether the master answered it: the node's current key works.
func (c *Client) Reach(ctx context.Context) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: c.Transport}
	defer hc.CloseIdleConnections()
	_, _, _, err := c.doAt(ctx, hc, c.master(), http.MethodPost, PathConfirm+"?rev=reach")
	return err
}
