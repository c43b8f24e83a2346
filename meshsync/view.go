package meshsync

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// PathView is where the master serves its view of the mesh (its peers'
// handshakes and where their datagrams come from) to `appliance doctor`
// on the other nodes: "the master hears node-2 but node-2 never gets the
// answers" needs both ends.
const PathView = "/v1/view"

// SetView sets what GET /v1/view answers (made when asked; nil: 404).
func (s *Server) SetView(view func() []byte) {
	s.mu.Lock()
	s.view = view
	s.mu.Unlock()
}

func (s *Server) serveView(_ *http.Request, _ *follower) answer {
	s.mu.Lock()
	view := s.view
	s.mu.Unlock()
	if view == nil {
		return textAnswer(http.StatusNotFound, "this node serves no view")
	}
	return answer{status: http.StatusOK, body: view()}
}

// View asks the master for its view of the mesh, once, within timeout.
func (c *Client) View(ctx context.Context, timeout time.Duration) ([]byte, error) {
	hc := &http.Client{Timeout: timeout, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	status, _, body, err := c.doAt(ctx, hc, c.master(), http.MethodGet, PathView)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("the master answered %d: %s", status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// ClockOffset is the master's clock minus this node's, from the last
// authenticated answer (a server's while the master does not answer);
// false before any.
func (c *Client) ClockOffset() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset, !c.status.LastContact.IsZero()
}
