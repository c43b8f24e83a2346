package meshsync

import (
	"context"
	"errors"
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

// keyChangeTimeout bounds a key change request: the master answers once
// every other node has the file with the new key (membership waits at most
// 15 s for that), so it takes longer than other requests.
const keyChangeTimeout = 45 * time.Second

// Rotate is what the master does with a key change. Accept records the
// node's next key (its entry in the cluster file) and returns once the
// other nodes hold it, so that the node can switch as soon as it has the
// answer; it returns a *Refusal for a change it will never make, any other
// error for one that may work when asked again. Asked again with the same
// key (an answer lost on the way), it says yes again.
type Rotate struct {
	Accept func(ctx context.Context, n Node, next wgtypes.Key) error
}

// Refusal is a key change the master will never make, and why: the node
// stops asking.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

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
		return textAnswer(http.StatusForbidden, "this node takes no key change: only the master does")
	}
	next, err := configs.ParsePublicKey(r.URL.Query().Get("new"))
	if err != nil || next == f.Key {
		return textAnswer(http.StatusBadRequest, "new: not a new WireGuard public key")
	}
	err = rot.Accept(r.Context(), f.Node, next)
	var refusal *Refusal
	switch {
	case errors.As(err, &refusal):
		s.log.Warn("sync: refused a node's key change", "node", f.Name, "reason", refusal.Reason)
		return textAnswer(http.StatusConflict, refusal.Reason)
	case err != nil:
		s.log.Warn("sync: a node's key change failed here; it asks again", "node", f.Name, "err", err)
		return textAnswer(http.StatusServiceUnavailable, err.Error())
	}
	s.log.Info("sync: a node's key changes; every other node has its new key", "node", f.Name, "from", f.Key.String(), "to", next.String())
	return answer{status: http.StatusNoContent}
}

// RotateKey asks the master to replace this node's public key with next.
// Once it answered yes, the master and the other nodes hold next: the
// node must switch to the matching private key. A *RefusedError with
// status 409 is a change the master will never make.
func (c *Client) RotateKey(ctx context.Context, next wgtypes.Key) error {
	hc := &http.Client{Timeout: keyChangeTimeout, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	status, _, body, err := c.doAt(ctx, hc, c.master(), http.MethodPost, PathKey+"?new="+url.QueryEscape(next.String()))
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return &RefusedError{Status: status, Reason: strings.TrimSpace(string(body))}
	}
	return nil
}

// Reach sends one authenticated request that changes nothing and reports
// whether the master answered it: the node's current key works.
func (c *Client) Reach(ctx context.Context) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	_, _, _, err := c.doAt(ctx, hc, c.master(), http.MethodPost, PathConfirm+"?rev=reach")
	if err != nil {
		return fmt.Errorf("reaching the master: %w", err)
	}
	return nil
}
