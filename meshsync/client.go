package meshsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/status"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultPort is the TCP port the master serves on its wg address.
const DefaultPort = 5419

// maxFile bounds what a client accepts, like configs.MaxFileSize.
const maxFile = 16 << 20

// Errors Apply returns to say what became of a file (see Client.Apply).
var (
	// ErrNotCurrent: the master no longer serves the revision (confirm
	// said so); nothing was changed and the client asks again at once.
	ErrNotCurrent = errors.New("the master no longer serves this revision")
	// ErrStaged: the file is valid but needs a restart; it was written
	// to the cluster file and takes effect at the next start.
	ErrStaged = errors.New("written; takes effect at the next start")
)

// Errors a request returns, for callers to decide by (errors.Is/As).
var (
	// ErrNotListed is a 403: the master's file does not list this node
	// with this node's key.
	ErrNotListed = errors.New("the master refuses this node: its file does not list this node with this node's key (was this node removed from the master's file?)")
	// ErrNoAnswer: the request got no answer (the master is down, or
	// the tunnel to it).
	ErrNoAnswer = errors.New("the master does not answer")
)

// RefusedError is an authenticated answer that says no, with the
// master's reason.
type RefusedError struct {
	Status int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the master refused (%d): %s", e.Status, e.Reason)
}

// Client follows the master's cluster file: it long-polls the master and
// hands every new revision to Apply.
//
// The revision it asks with is the one it runs, or the one it last
// refused or staged: the master answers at once only when it serves
// another one, so a follower that refused a file waits for the next
// instead of asking for it again. A refusal ends when the master serves
// what this node runs again, when this node's file changes (Changed), or
// after RetryRefused (the host may have been fixed).
type Client struct {
	Master netip.AddrPort
	// Sources, if set, lists the nodes that serve the file, the master
	// first (it is Master), then the servers: when the one followed does
	// not answer, the next is asked; the master is asked again after
	// SourceRetry. Tokens and the file fail over; a key change, Reach and
	// the endpoints are the master's alone.
	Sources func() []Source
	Log     *slog.Logger
	// Keys returns this node's WireGuard private key and the master's
	// public key, from the file this node runs.
	Keys func() (private, master wgtypes.Key)
	// Have returns the revision of the file this node runs.
	Have func() string
	// Apply takes the master's file: it validates it as a reload would,
	// calls confirm (which fails with ErrNotCurrent when the master no
	// longer serves it; staging says the file will only be written for
	// the next start) just before it changes anything, then writes it
	// and reloads. It returns ErrNotCurrent, an error wrapping ErrStaged,
	// or why it refused the file.
	Apply func(data []byte, confirm func(staging bool) error) error
	// Retry is the pause after a failed or fruitless poll (default 2 s).
	Retry time.Duration
	// RetryRefused is how long a refused revision is not asked for again
	// (default 5 min).
	RetryRefused time.Duration
	// Transport carries the requests (default: TCP to Master).
	Transport http.RoundTripper
	// Now is the clock (default time.Now).
	Now func() time.Time

	nudge   chan struct{} // the local revision changed: ask again now
	mu      sync.Mutex
	cur     int       // the source followed (index in Sources())
	since   time.Time // when it became the one followed
	status  status.Sync
	pending *pending
	offset  time.Duration // the master's clock minus ours
	lastErr string
	dialer  *http.Transport // transport's default
}

// dialTimeout bounds a connection to a source: a source that is down
// (its machine lost, its cloud cut off) must not hold a follower for the
// whole request's timeout before it asks the next. TCP keepalives find
// one that goes down under a long poll in about 11 s.
const dialTimeout = 5 * time.Second

var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: 2 * time.Second, Count: 3}

// transport is Transport, or one whose connections give up after
// dialTimeout.
func (c *Client) transport() http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dialer == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAliveConfig: keepAlive}).DialContext
		c.dialer = t
	}
	return c.dialer
}

// Source is a node that serves the sync: its name, where it listens and
// its public key (which the requests and answers are bound to).
type Source struct {
	Name string
	Addr netip.AddrPort
	Key  wgtypes.Key
}

// SourceRetry is how long a follower follows a server before it asks the
// master again.
const SourceRetry = 30 * time.Second

// source returns the source to ask: the one followed, or the master again
// once SourceRetry has passed.
func (c *Client) source() Source {
	if c.Sources == nil {
		return c.master()
	}
	list := c.Sources()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur >= len(list) || c.cur != 0 && c.now().Sub(c.since) >= SourceRetry {
		c.cur = 0
	}
	if len(list) == 0 {
		return c.master()
	}
	return list[c.cur]
}

// master is the first source: the master. With Sources it is the
// first of them, as the file this node runs says now (a promoted server
// is the master of the file it handed round).
func (c *Client) master() Source {
	_, key := c.Keys()
	if c.Sources != nil {
		if list := c.Sources(); len(list) > 0 && list[0].Key == key {
			return list[0]
		}
	}
	return Source{Name: "master", Addr: c.Master, Key: key}
}

// unanswered moves on from src, which did not answer, to the next source.
func (c *Client) unanswered(src Source) {
	if c.Sources == nil {
		return
	}
	list := c.Sources()
	c.mu.Lock()
	if len(list) < 2 || c.cur >= len(list) || list[c.cur].Addr != src.Addr {
		c.mu.Unlock()
		return
	}
	c.cur = (c.cur + 1) % len(list)
	c.since = c.now()
	next := list[c.cur]
	c.mu.Unlock()
	c.Log.Info("sync: asking another node that serves the file", "unanswered", src.Name, "now", next.Name, "at", next.Addr)
}

// pending is a master's revision this node did not take.
type pending struct {
	rev, reason string
	staged      bool
	at          time.Time
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) retry() time.Duration {
	if c.Retry > 0 {
		return c.Retry
	}
	return 2 * time.Second
}

func (c *Client) retryRefused() time.Duration {
	if c.RetryRefused > 0 {
		return c.RetryRefused
	}
	return 5 * time.Minute
}

// Changed tells the client that this node now runs another file (a local
// reload): a refusal is forgotten and a waiting poll asks again at once.
func (c *Client) Changed() {
	c.mu.Lock()
	c.pending = nil
	c.status.Refused, c.status.Staged = "", ""
	c.mu.Unlock()
	select {
	case c.nudges() <- struct{}{}:
	default:
	}
}

func (c *Client) nudges() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nudge == nil {
		c.nudge = make(chan struct{}, 1)
	}
	return c.nudge
}

// Status returns a snapshot.
func (c *Client) Status() status.Sync {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Role = "following"
	st.Master = c.master().Addr.String()
	if c.Sources != nil && c.cur > 0 {
		if list := c.Sources(); c.cur < len(list) {
			st.Following = list[c.cur].Name + " (" + list[c.cur].Addr.String() + ")"
		}
	}
	st.Revision = c.Have()
	return st
}

// outcome is what one poll came to.
type outcome int

const (
	waited   outcome = iota // 304 after the long wait: nothing new
	inSync                  // the master serves what this node runs
	applied                 // a new file was taken
	stale                   // the answer was no longer current
	declined                // refused or staged
)

// Run polls until ctx is cancelled. A poll that fails, or comes back at
// once with nothing taken, is followed by a pause of Retry: whatever the
// master answers, the client never spins.
func (c *Client) Run(ctx context.Context) error {
	hc := &http.Client{Timeout: DefaultWait + 15*time.Second, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	nudge := c.nudges()
	for {
		began := c.now()
		pctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		go func() {
			select {
			case <-nudge:
				cancel()
			case <-stop:
			}
		}()
		out, err := c.poll(pctx, hc)
		close(stop)
		nudged := pctx.Err() != nil && ctx.Err() == nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case nudged:
			continue
		case err != nil:
			c.failed(err)
		case out == waited || out == applied || out == stale:
			continue
		case c.now().Sub(began) >= c.retry():
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-nudge:
		case <-time.After(c.retry()):
		}
	}
}

// failed records a failed poll; the same error again is not logged again.
func (c *Client) failed(err error) {
	c.mu.Lock()
	first := err.Error() != c.lastErr
	c.lastErr, c.status.LastError = err.Error(), err.Error()
	c.mu.Unlock()
	if !first {
		return
	}
	if errors.Is(err, ErrNotListed) {
		c.Log.Error("sync: "+err.Error(), "master", c.Master)
		return
	}
	c.Log.Warn("sync: cannot reach the master; retrying", "master", c.Master, "err", err)
}

// asking returns the revision to ask with.
func (c *Client) asking() string {
	c.mu.Lock()
	p := c.pending
	c.mu.Unlock()
	if p != nil && (p.staged || c.now().Sub(p.at) < c.retryRefused()) {
		return p.rev
	}
	return c.Have()
}

func (c *Client) poll(ctx context.Context, hc *http.Client) (outcome, error) {
	c.mu.Lock()
	c.status.Polls++
	failing := c.lastErr != ""
	c.mu.Unlock()
	if failing {
		// After a failure the long poll would clear the error only when it
		// ends (up to 25 s later): ask something answered at once first.
		if _, _, _, err := c.do(ctx, hc, http.MethodPost, PathConfirm+"?rev=reach"); err != nil {
			return 0, err
		}
	}
	status, rev, data, err := c.do(ctx, hc, http.MethodGet, PathCluster+"?have="+c.asking())
	if err != nil {
		return 0, err
	}
	switch status {
	case http.StatusNotModified:
		return waited, nil
	case http.StatusOK:
	default:
		return 0, fmt.Errorf("the master answered %d %s", status, http.StatusText(status))
	}
	if Revision(data) != rev {
		return 0, fmt.Errorf("the master's file does not match its revision %s", rev)
	}
	running := c.Have()
	if rev == running {
		c.settle(rev)
		return inSync, nil
	}
	err = c.Apply(data, func(staging bool) error { return c.confirm(ctx, hc, rev, staging) })
	var transient *confirmError
	switch {
	case err == nil:
		c.mu.Lock()
		c.pending, c.status.Refused, c.status.Staged, c.status.LastApplied = nil, "", "", c.now()
		c.mu.Unlock()
		c.Log.Info("sync: took the master's cluster file", "revision", rev, "was", running)
		return applied, nil
	case errors.Is(err, ErrNotCurrent):
		c.Log.Info("sync: the master's file changed while this node checked it; asking again", "revision", rev)
		return stale, nil
	case errors.As(err, &transient):
		return 0, transient.err
	}
	c.decline(rev, err)
	return declined, nil
}

// settle: the master serves what this node runs; whatever was pending is
// over.
func (c *Client) settle(rev string) {
	c.mu.Lock()
	was := c.pending
	c.pending, c.status.Refused, c.status.Staged = nil, "", ""
	c.mu.Unlock()
	if was != nil {
		c.Log.Info("sync: the master serves the file this node runs again", "revision", rev, "was_pending", was.rev)
	}
}

// decline records a revision this node did not take; a reason is logged
// once, not at every retry.
func (c *Client) decline(rev string, err error) {
	p := &pending{rev: rev, reason: err.Error(), staged: errors.Is(err, ErrStaged), at: c.now()}
	c.mu.Lock()
	same := c.pending != nil && c.pending.rev == rev && c.pending.reason == p.reason
	c.pending = p
	text := fmt.Sprintf("revision %s: %s", rev, p.reason)
	if p.staged {
		c.status.Staged, c.status.Refused = text, ""
	} else {
		c.status.Refused, c.status.Staged = text, ""
	}
	c.mu.Unlock()
	switch {
	case same:
	case p.staged:
		c.Log.Warn("sync: the master's cluster file needs a restart of this node", "revision", rev, "detail", p.reason)
	default:
		c.Log.Error("sync: refused the master's cluster file; this node keeps running its own", "revision", rev, "reason", p.reason)
	}
}

// confirmError is a confirmation that could not be asked: nothing was
// decided, the poll is tried again.
type confirmError struct{ err error }

func (e *confirmError) Error() string { return e.err.Error() }

// takenWait bounds how long a follower waits for the master to note that
// it takes a revision: the master may already have switched to a new key
// (the note was the last it waited for), and then its answer never comes.
const takenWait = 2 * time.Second

// confirm asks the master whether it still serves rev; if so, it tells the
// master that this node takes it now (or stages it for its next start),
// once it has that answer, so that the master knows the file has arrived.
func (c *Client) confirm(ctx context.Context, hc *http.Client, rev string, staging bool) error {
	status, _, _, err := c.do(ctx, hc, http.MethodPost, PathConfirm+"?rev="+rev)
	switch {
	case err != nil:
		return &confirmError{fmt.Errorf("confirming revision %s: %w", rev, err)}
	case status == http.StatusConflict:
		return ErrNotCurrent
	case status != http.StatusNoContent:
		return &confirmError{fmt.Errorf("confirming revision %s: the master answered %d", rev, status)}
	}
	uri := PathTaken + "?rev=" + rev
	if staging {
		uri += "&staging=1"
	}
	tctx, cancel := context.WithTimeout(ctx, takenWait)
	defer cancel()
	if _, _, _, err := c.do(tctx, hc, http.MethodPost, uri); err != nil {
		c.Log.Debug("sync: the master did not answer that this node takes the file; it takes it anyway", "revision", rev, "err", err)
	}
	return nil
}

// do sends one authenticated request and checks the answer's
// authentication. It learns the master's clock from every answer, and
// asks once more when the master refused the request's time.
func (c *Client) do(ctx context.Context, hc *http.Client, method, uri string) (status int, rev string, body []byte, err error) {
	src := c.source()
	status, rev, body, err = c.doAt(ctx, hc, src, method, uri)
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrNotListed) {
		var ae *authError
		if !errors.As(err, &ae) {
			c.unanswered(src)
		}
	}
	return status, rev, body, err
}

// authError is an answer that came but failed its checks.
type authError struct{ err error }

func (e *authError) Error() string { return e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// doAt is do against one source.
func (c *Client) doAt(ctx context.Context, hc *http.Client, src Source, method, uri string) (status int, rev string, body []byte, err error) {
	return c.exchange(ctx, hc, src, method, uri, nil, maxFile)
}

// exchange is doAt with a request body (not covered by the request's MAC:
// what is sent this way is authenticated on its own, as a sealed snapshot
// is) and a bound on the answer's.
func (c *Client) exchange(ctx context.Context, hc *http.Client, src Source, method, uri string, send []byte, limit int64) (status int, rev string, body []byte, err error) {
	for attempt := 0; ; attempt++ {
		private, _ := c.Keys()
		responder := src.Key
		self := private.PublicKey()
		k, err := derive(private, responder, self, responder)
		if err != nil {
			return 0, "", nil, fmt.Errorf("this node's key and the master's: %w", err)
		}
		var reqBody io.Reader
		if send != nil {
			reqBody = bytes.NewReader(send)
		}
		req, err := http.NewRequestWithContext(ctx, method, "http://"+src.Addr.String()+uri, reqBody)
		if err != nil {
			return 0, "", nil, err
		}
		c.mu.Lock()
		offset := c.offset
		c.mu.Unlock()
		nonce := sign(req, k, self, c.now().Add(offset))
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return 0, "", nil, err
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, "", nil, fmt.Errorf("%w (%s, no answer within the timeout)", ErrNoAnswer, src.Addr)
			}
			return 0, "", nil, fmt.Errorf("%w: %w", ErrNoAnswer, err)
		}
		body, err = readAllLimited(resp.Body, limit)
		resp.Body.Close()
		if err != nil {
			return 0, "", nil, fmt.Errorf("reading the master's answer: %w", err)
		}
		if resp.StatusCode == http.StatusForbidden && resp.Header.Get(HeaderAuth) == "" {
			return 0, "", nil, ErrNotListed
		}
		mtime, err := verifyAnswer(resp.Header, k, nonce, resp.StatusCode, body)
		if err != nil {
			return 0, "", nil, &authError{err}
		}
		c.mu.Lock()
		c.offset = mtime.Sub(c.now())
		c.status.LastContact = c.now()
		c.status.LastError, c.lastErr = "", ""
		c.mu.Unlock()
		if resp.StatusCode != http.StatusUnauthorized {
			return resp.StatusCode, resp.Header.Get(HeaderRevision), body, nil
		}
		why := strings.TrimSpace(string(body))
		if attempt == 0 && strings.HasPrefix(why, "clock") {
			c.Log.Warn("sync: this node's clock is off the master's; using the master's time (fix: run chronyd or ntpd on both)", "detail", why)
			continue
		}
		return 0, "", nil, &RefusedError{Status: http.StatusUnauthorized, Reason: "this node's authentication: " + why}
	}
}

// FetchToken fetches this node's k3s token from the master.
func (c *Client) FetchToken(ctx context.Context) ([]byte, error) {
	return c.fetchToken(ctx, "")
}

// TokenAgent asks for the agent token whatever this node's role: a server
// serves it to agents (GET /v1/token?kind=agent; servers only).
const TokenAgent = "agent"

func (c *Client) fetchToken(ctx context.Context, kind string) ([]byte, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: c.transport()}
	defer hc.CloseIdleConnections()
	uri := PathToken
	if kind != "" {
		uri += "?kind=" + kind
	}
	status, _, body, err := c.do(ctx, hc, http.MethodGet, uri)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("the master answered %d: %s", status, strings.TrimSpace(string(body)))
	}
	token := bytes.TrimSpace(body)
	if len(token) == 0 {
		return nil, errors.New("the master's token is empty")
	}
	return token, nil
}

// EnsureToken fetches this node's k3s token from the master when path is
// missing or empty, and writes it 0600. It retries until ctx is done, with
// a growing pause: k3s cannot start without it. The token is never logged.
func EnsureToken(ctx context.Context, c *Client, path string, log *slog.Logger) error {
	return EnsureTokenOf(ctx, c, "", path, log)
}

// EnsureTokenOf is EnsureToken for a kind of token ("" is this node's
// role's; TokenAgent the agent token, for a server).
func EnsureTokenOf(ctx context.Context, c *Client, kind, path string, log *slog.Logger) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		return nil
	}
	log.Info("sync: no token here; fetching it from the master over wg0", "master", c.Master, "token_file", path)
	pause := 2 * time.Second
	for attempt := 1; ; attempt++ {
		token, err := c.fetchToken(ctx, kind)
		if err == nil {
			if err := atomicfile.Secret(path, append(token, '\n')); err != nil {
				return err
			}
			log.Info("sync: token written", "token_file", path)
			return nil
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("sync: cannot fetch the token yet; retrying", "master", c.Master, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// readAllLimited reads at most n bytes of r.
func readAllLimited(r io.Reader, n int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, n+1))
	if err == nil && int64(len(data)) > n {
		err = fmt.Errorf("more than %d bytes", n)
	}
	return data, err
}
