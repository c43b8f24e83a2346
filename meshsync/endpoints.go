package meshsync

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PathEndpoints is where the master (and each server) serves where it
// sees each node from:
// the address and port a node's packets arrive from, which for a node
// behind NAT is its router's public mapping. A node the file gives no
// endpoint is reached there (package paths).
const PathEndpoints = "/v1/endpoints"

// Endpoints are where the master sees each node from, by public key.
type Endpoints map[wgtypes.Key]netip.AddrPort

// encodeEndpoints renders eps as sorted "key address:port" lines, so that
// the same endpoints always give the same revision.
func encodeEndpoints(eps Endpoints) []byte {
	lines := make([]string, 0, len(eps))
	for k, ap := range eps {
		if ap.IsValid() {
			lines = append(lines, k.String()+" "+ap.String()+"\n")
		}
	}
	slices.Sort(lines)
	return []byte(strings.Join(lines, ""))
}

func decodeEndpoints(data []byte) (Endpoints, error) {
	eps := Endpoints{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		key, addr, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("endpoints line %d: not \"key address:port\"", n)
		}
		k, err := wgtypes.ParseKey(key)
		if err != nil {
			return nil, fmt.Errorf("endpoints line %d: %w", n, err)
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("endpoints line %d: %w", n, err)
		}
		eps[k] = ap
	}
	return eps, sc.Err()
}

// SetEndpoints publishes where the master sees each node from; waiting
// polls answer at once when that changed.
func (s *Server) SetEndpoints(eps Endpoints) { s.endpoints.set(encodeEndpoints(eps), false) }

// serveEndpoints answers with the endpoints when their revision is not the
// one asked with; else it waits for a change up to 25 s, then says 304.
func (s *Server) serveEndpoints(r *http.Request, _ *follower) answer {
	return s.endpoints.poll(r.Context(), r.URL.Query().Get("have"), s.wait)
}

// FollowEndpoints long-polls where the master sees each node from and
// hands every new list to take, until ctx is cancelled. A failed poll is
// retried after Retry; it is logged once, as Run's are.
func (c *Client) FollowEndpoints(ctx context.Context, take func(Endpoints)) error {
	hc := &http.Client{Timeout: DefaultWait + 15*time.Second, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	have := ""
	for {
		// The master sees every node; while it does not answer, the
		// servers do (each serves where it sees the nodes from).
		status, rev, data, err := c.do(ctx, hc, http.MethodGet, PathEndpoints+"?have="+have)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			c.Log.Debug("sync: cannot fetch the endpoints the master sees; retrying", "err", err)
		case status == http.StatusNotModified:
			continue
		case status != http.StatusOK:
			c.Log.Debug("sync: the master answered the endpoints poll", "status", status)
		case Revision(data) != rev:
			c.Log.Warn("sync: the master's endpoints do not match their revision", "revision", rev)
		default:
			eps, err := decodeEndpoints(data)
			if err != nil {
				c.Log.Warn("sync: cannot read the master's endpoints", "err", err)
				break
			}
			changed := rev != have
			have = rev
			if changed {
				take(eps)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.retry()):
		}
	}
}
