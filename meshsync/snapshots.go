package meshsync

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A lone master's datastore is kept by the other nodes (package
// snapshot): the master publishes its newest sealed snapshot, every node
// long-polls it and keeps it, and names in each poll the newest copy it
// keeps, so the master knows who holds what. A master that restores on a
// new machine answers the poll 428 instead: each node then offers its
// newest copy, and the master takes the newest that opens with its token.
// The copies are sealed (authenticated encryption under a key only the
// server token gives): the nodes, and this protocol, carry ciphertext.
const (
	PathSnapshot      = "/v1/snapshot"
	PathSnapshotOffer = "/v1/snapshot/offer"
	// MaxSnapshot bounds a sealed snapshot in either direction.
	MaxSnapshot = 256 << 20
)

// snapshotState is the server's part of it.
type snapshotState struct {
	feed *feed
	// restoring: the master has no datastore and asks for the nodes'.
	restoring bool
	offers    map[wgtypes.Key]Offer
	offered   chan struct{} // closed and replaced at each offer
	restored  chan struct{} // closed by Restored
}

// Offer is what a node offered a restoring master.
type Offer struct {
	Node string
	// Sealed is its newest copy; nil when it keeps none.
	Sealed []byte
}

// SetSnapshot publishes a sealed snapshot; waiting polls answer at once.
func (s *Server) SetSnapshot(sealed []byte) { s.snapshots.feed.set(sealed, false) }

// SnapshotHolders returns the names of the nodes that said they keep the
// snapshot published now.
func (s *Server) SnapshotHolders() []string {
	_, rev := s.snapshots.feed.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for _, f := range s.followers {
		if f.held == rev && !f.KeyChangeOnly {
			names = append(names, f.Name)
		}
	}
	slices.Sort(names)
	return names
}

// Restoring makes the server ask the nodes for their copies (428 to every
// snapshot poll) until Restored; the offers so far are dropped.
func (s *Server) Restoring() {
	s.mu.Lock()
	s.snapshots.restoring = true
	s.snapshots.offers = map[wgtypes.Key]Offer{}
	s.snapshots.offered, s.snapshots.restored = make(chan struct{}), make(chan struct{})
	s.mu.Unlock()
	s.snapshots.feed.set(nil, true) // wake the waiting polls: they are told
}

// Restored ends Restoring.
func (s *Server) Restored() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snapshots.restoring {
		s.snapshots.restoring, s.snapshots.offers = false, nil
		close(s.snapshots.restored)
	}
}

// Offers returns what the nodes offered since Restoring, by name, the
// nodes that did not offer yet, and a channel closed at the next offer.
func (s *Server) Offers() (offers []Offer, missing []string, next <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, f := range s.followers {
		if f.KeyChangeOnly {
			continue
		}
		if o, ok := s.snapshots.offers[k]; ok {
			offers = append(offers, o)
		} else {
			missing = append(missing, f.Name)
		}
	}
	slices.SortFunc(offers, func(a, b Offer) int { return strings.Compare(a.Node, b.Node) })
	slices.Sort(missing)
	return offers, missing, s.snapshots.offered
}

func (s *Server) serveSnapshot(r *http.Request, f *follower) answer {
	q := r.URL.Query()
	s.noteHeard(f.Key, func(f *follower) { f.held = q.Get("held") })
	s.mu.Lock()
	restoring, restored := s.snapshots.restoring, s.snapshots.restored
	_, offered := s.snapshots.offers[f.Key]
	s.mu.Unlock()
	switch {
	case restoring && !offered:
		return textAnswer(http.StatusPreconditionRequired, "the master restores its datastore: offer your newest copy")
	case restoring: // it offered: it waits for the end, as a long poll
		timer := time.NewTimer(s.wait)
		defer timer.Stop()
		select {
		case <-restored:
		case <-timer.C:
		case <-r.Context().Done():
		}
		return answer{status: http.StatusNotModified}
	}
	return s.snapshots.feed.poll(r.Context(), q.Get("have"), s.wait)
}

func (s *Server) serveSnapshotOffer(r *http.Request, f *follower) answer {
	s.mu.Lock()
	restoring := s.snapshots.restoring
	s.mu.Unlock()
	if !restoring { // before reading a byte of it
		return textAnswer(http.StatusConflict, "the master does not restore")
	}
	data, err := readAllLimited(r.Body, MaxSnapshot)
	if err != nil {
		return textAnswer(http.StatusRequestEntityTooLarge, "the copy: "+err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.snapshots.restoring {
		return textAnswer(http.StatusConflict, "the master does not restore")
	}
	o := Offer{Node: f.Name}
	if len(data) > 0 {
		o.Sealed = data
	}
	s.snapshots.offers[f.Key] = o
	close(s.snapshots.offered)
	s.snapshots.offered = make(chan struct{})
	return answer{status: http.StatusNoContent}
}

// SnapshotKeeper is a node's side: the copies it keeps.
type SnapshotKeeper interface {
	// Held is the revision (Revision of the sealed bytes) of the newest
	// copy kept, "" for none.
	Held() string
	// Keep keeps a sealed copy (checking what it can without the token).
	Keep(sealed []byte) error
	// Newest is the newest copy kept, nil for none.
	Newest() ([]byte, error)
}

// FollowSnapshots long-polls the master's snapshots and keeps each new
// one, until ctx is cancelled; while the master restores, it offers the
// newest copy kept. A failed poll is retried after Retry.
func (c *Client) FollowSnapshots(ctx context.Context, keeper SnapshotKeeper) error {
	hc := &http.Client{Timeout: DefaultWait + 15*time.Second + 60*time.Second, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	have := keeper.Held() // the master answers at once only with another
	for {
		status, rev, data, err := c.exchange(ctx, hc, c.master(), http.MethodGet, PathSnapshot+"?have="+have+"&held="+keeper.Held(), nil, MaxSnapshot)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			c.Log.Debug("sync: cannot fetch the master's snapshot; retrying", "err", err)
		case status == http.StatusNotModified:
			continue
		case status == http.StatusPreconditionRequired:
			if c.offer(ctx, hc, keeper) {
				have = ""
			}
		case status != http.StatusOK:
			c.Log.Debug("sync: the master answered the snapshot poll", "status", status)
		case Revision(data) != rev:
			c.Log.Warn("sync: the master's snapshot does not match its revision", "revision", rev)
		case len(data) == 0 || rev == have:
			have = rev // none published yet, or this one was refused
			continue
		default:
			have = rev
			if err := keeper.Keep(data); err != nil {
				c.Log.Warn("sync: cannot keep the master's snapshot", "err", err)
				break
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.retry()):
		}
	}
}

// offer sends the newest copy kept to a restoring master; false when it
// could not.
func (c *Client) offer(ctx context.Context, hc *http.Client, keeper SnapshotKeeper) bool {
	sealed, err := keeper.Newest()
	if err != nil {
		c.Log.Warn("sync: cannot read the newest snapshot kept to offer it", "err", err)
		return false
	}
	if sealed == nil {
		sealed = []byte{}
	}
	status, _, body, err := c.exchange(ctx, hc, c.master(), http.MethodPost, PathSnapshotOffer, sealed, maxFile)
	switch {
	case err != nil:
		c.Log.Debug("sync: cannot offer the newest snapshot", "err", err)
		return false
	case status != http.StatusNoContent:
		c.Log.Debug("sync: the master answered the offer", "status", status, "reason", strings.TrimSpace(string(body)))
		return false
	}
	c.Log.Info("sync: offered the master this node's newest snapshot", "bytes", len(sealed))
	return true
}

// ErrNoCopy: no node offered a copy that opens.
var ErrNoCopy = errors.New("no node offered a copy that opens with this token")

// AwaitOffers waits until every node has offered (or ctx ends, or
// patience has passed since the first copy arrived) and returns the
// offers. The first copy waits for every node: the newest may be on any.
func (s *Server) AwaitOffers(ctx context.Context, patience time.Duration, progress func(offers []Offer, missing []string)) ([]Offer, error) {
	var first time.Time
	for {
		offers, missing, next := s.Offers()
		progress(offers, missing)
		copies := slices.ContainsFunc(offers, func(o Offer) bool { return o.Sealed != nil })
		if copies && first.IsZero() {
			first = time.Now()
		}
		if len(missing) == 0 || (copies && time.Since(first) >= patience) {
			return offers, nil
		}
		var timeout <-chan time.Time
		if copies {
			timeout = time.After(patience - time.Since(first))
		}
		select {
		case <-ctx.Done():
			return offers, fmt.Errorf("waiting for the nodes' copies: %w", ctx.Err())
		case <-next:
		case <-timeout:
		}
	}
}
