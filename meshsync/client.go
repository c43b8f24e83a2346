package meshsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultPort is the TCP port the master serves on its wg address.
const DefaultPort = 5419

// maxFile bounds what a client accepts, like configs.MaxFileSize.
const maxFile = 16 << 20

// Status is what a client knows of its sync with the master.
type Status struct {
	Master string `json:"master"`
	// Revision is the revision of the cluster file this node runs.
	Revision string `json:"revision"`
	// LastContact is the last time the master answered.
	LastContact time.Time `json:"last_contact,omitzero"`
	// LastApplied is the last time a master's file was taken.
	LastApplied time.Time `json:"last_applied,omitzero"`
	// Refused says why the master's latest file was not taken.
	Refused   string `json:"refused,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

// Client follows the master's cluster file: it long-polls the master and
// hands every new revision to Apply, which validates it as a SIGHUP
// would, writes it and reloads, or refuses it.
type Client struct {
	Master netip.AddrPort
	Log    *slog.Logger
	// Have returns the revision of the file this node runs.
	Have func() string
	// Apply takes the master's file or says why not.
	Apply func(data []byte) error
	// Retry is the pause after a failed poll (default 2 s).
	Retry time.Duration

	nudge   chan struct{} // the local revision changed: ask again now
	mu      sync.Mutex
	status  Status
	refused string // the master revision Apply refused; not asked for again
	lastErr string
}

func (c *Client) httpClient() *http.Client {
	return &http.Client{Timeout: DefaultWait + 15*time.Second}
}

// Changed tells the client that this node now runs another revision (a
// local reload): a poll waiting with the old one asks again at once.
func (c *Client) Changed() {
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
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.Master = c.Master.String()
	st.Revision = c.Have()
	return st
}

// Run polls until ctx is cancelled.
func (c *Client) Run(ctx context.Context) error {
	retry := c.Retry
	if retry == 0 {
		retry = 2 * time.Second
	}
	hc := c.httpClient()
	nudge := c.nudges()
	for {
		pctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		go func() {
			select {
			case <-nudge:
				cancel()
			case <-stop:
			}
		}()
		err := c.poll(pctx, hc)
		close(stop)
		nudged := pctx.Err() != nil && ctx.Err() == nil
		cancel()
		if nudged {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			continue
		}
		c.mu.Lock()
		first := err.Error() != c.lastErr
		c.lastErr, c.status.LastError = err.Error(), err.Error()
		c.mu.Unlock()
		if first { // a master that stays unreachable is logged once
			c.Log.Warn("sync: cannot reach the master; retrying", "master", c.Master, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

func (c *Client) poll(ctx context.Context, hc *http.Client) error {
	have := c.Have()
	c.mu.Lock()
	if c.refused != "" {
		have = c.refused
	}
	c.mu.Unlock()
	url := fmt.Sprintf("http://%s%s?have=%s", c.Master, PathCluster, have)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		c.contact("")
		return nil
	case http.StatusOK:
	default:
		return fmt.Errorf("the master answered %s", resp.Status)
	}
	data, err := readAllLimited(resp.Body, maxFile)
	if err != nil {
		return fmt.Errorf("reading the master's file: %w", err)
	}
	rev := Revision(data)
	c.contact("")
	if rev == c.Have() {
		return nil
	}
	running := c.Have()
	if err := c.Apply(data); err != nil {
		c.mu.Lock()
		c.refused, c.status.Refused = rev, fmt.Sprintf("revision %s: %v", rev, err)
		c.mu.Unlock()
		c.Log.Error("sync: refused the master's cluster file; this node keeps running its own", "revision", rev, "reason", err)
		return nil
	}
	c.mu.Lock()
	c.refused, c.status.Refused, c.status.LastApplied = "", "", time.Now()
	c.mu.Unlock()
	c.Log.Info("sync: took the master's cluster file", "revision", rev, "was", running)
	return nil
}

func (c *Client) contact(errText string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.LastContact, c.status.LastError, c.lastErr = time.Now(), errText, errText
}

// EnsureToken fetches the join token from the master when path is missing
// or empty, and writes it 0600. It retries until ctx is done: an agent
// cannot start k3s without it. The token is never logged.
func EnsureToken(ctx context.Context, master netip.AddrPort, path string, log *slog.Logger) error {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		return nil
	}
	log.Info("sync: no token here; fetching it from the master over wg0", "master", master, "token_file", path)
	hc := &http.Client{Timeout: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		token, err := fetchToken(ctx, hc, master)
		if err == nil {
			if err := writeSecret(path, append(token, '\n')); err != nil {
				return err
			}
			log.Info("sync: token written", "token_file", path)
			return nil
		}
		if attempt == 1 || attempt%30 == 0 {
			log.Warn("sync: cannot fetch the token yet; retrying", "master", master, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func fetchToken(ctx context.Context, hc *http.Client, master netip.AddrPort) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+master.String()+PathToken, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, errors.New("the master does not answer")
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the master answered %s", resp.Status)
	}
	data, err := readAllLimited(resp.Body, 4096)
	if err != nil {
		return nil, err
	}
	token := trimToken(data)
	if len(token) == 0 {
		return nil, errors.New("the master's token is empty")
	}
	return token, nil
}

// writeSecret writes data to path atomically, 0600 from the start.
func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
