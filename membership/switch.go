package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrCodeRefused is a joined node's key change the master will never
// make: its code was used already (by another machine), it expired, or
// the node was removed. The appliance stops with it (exit 1), changing
// nothing, and says what to do.
var ErrCodeRefused = errors.New("the master will not take this node's own key")

// SwitchApp is what the node's key switch needs of its running
// appliance.
type SwitchApp interface {
	// ChangeKey asks the master to take next in place of the code's key
	// (meshsync.Client.RotateKey).
	ChangeKey(ctx context.Context, next wgtypes.Key) error
	// UseKey makes key this node's: its entry in the cluster file, its
	// key file, and a reload, serialised with every other change.
	UseKey(key wgtypes.Key) error
	// ReachMaster says whether the master answers the key in use.
	ReachMaster(ctx context.Context) error
}

// Switch is a node joined by a code that carried its key, replacing that
// key with one made here (see keychange.go for the master's side).
type Switch struct {
	KeyFile string
	App     SwitchApp
	Log     *slog.Logger
	// Expires is the code's expiry (Marked reads it): a switch the master
	// never answered stops then.
	Expires time.Time
	// Retry is the first pause after an unanswered request (default 1 s,
	// doubling to 30 s).
	Retry time.Duration
	Now   func() time.Time
}

// Marked reads the marker Join writes beside the key: the node's name and
// the code's expiry.
func Marked(keyFile string) (node string, expires time.Time) {
	data, err := os.ReadFile(keyFile + InvitedSuffix)
	if err != nil {
		return "", time.Time{}
	}
	f := strings.Fields(string(data))
	if len(f) > 1 {
		expires, _ = time.Parse(time.RFC3339, f[1])
	}
	if len(f) > 0 {
		node = f[0]
	}
	return node, expires
}

// Pending says whether the key in keyFile came in a code and is still to
// be replaced.
func Pending(keyFile string) bool {
	_, err := os.Stat(keyFile + InvitedSuffix)
	return err == nil
}

// Run replaces the code's key. It returns nil when done (or when ctx
// ends), and an error wrapping ErrCodeRefused when the master will never
// take this node's key: the appliance then stops. It never switches keys
// without the master's yes, so a refused or unanswered node changes
// nothing.
//
// A master that took the code's key from another machine knows it no
// more: its WireGuard drops this node's handshakes, and nothing can tell
// it so. Such a node waits, says every few minutes what may be wrong,
// and stops once the code has expired (the master has forgotten it by
// then, used or not).
func (s *Switch) Run(ctx context.Context) error {
	current, err := readKey(s.KeyFile)
	if err != nil {
		return fmt.Errorf("join: reading this node's key: %w", err)
	}
	next, err := readOrMakeKey(s.KeyFile + NextSuffix)
	if err != nil {
		return fmt.Errorf("join: making this node's own key: %w", err)
	}
	if next == current { // switched already, stopped before the clean-up
		s.done(next)
		return nil
	}
	wait, began, warned := s.retry(), s.now(), s.now()
	for {
		err := s.changeKey(ctx, next)
		if err == nil {
			return s.use(ctx, next)
		}
		if err := refused(err, s.KeyFile); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := s.expired(began); err != nil {
			return err
		}
		if s.now().Sub(warned) >= unansweredWarnEvery {
			warned = s.now()
			s.Log.Warn("join: the master has not answered this node's join code key since "+began.Format(time.RFC3339)+
				"; if the code was used on another machine, the master no longer knows it and this node cannot join with it: "+
				"on the master `appliance invite NAME` again, then here `appliance join --force CODE`; otherwise check that the master runs and its UDP port is open", "err", err)
		}
		s.Log.Debug("join: the master does not take this node's own key yet", "err", err)
		pause := wait
		if !s.Expires.IsZero() {
			pause = max(min(pause, time.Until(s.Expires)), time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// changeKey asks the master, no longer than the code lives.
func (s *Switch) changeKey(ctx context.Context, next wgtypes.Key) error {
	if !s.Expires.IsZero() && s.Now == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, s.Expires)
		defer cancel()
	}
	return s.App.ChangeKey(ctx, next.PublicKey())
}

// unansweredWarnEvery is how often a node whose master does not answer its
// join code key says so.
const unansweredWarnEvery = 5 * time.Minute

func (s *Switch) retry() time.Duration {
	if s.Retry > 0 {
		return s.Retry
	}
	return time.Second
}

func (s *Switch) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// expired stops a switch whose code expired before the master ever
// answered: the master has forgotten the code, used or not.
func (s *Switch) expired(began time.Time) error {
	if s.Expires.IsZero() || s.now().Before(s.Expires) {
		return nil
	}
	return fmt.Errorf("%w: the master never answered this node's join code key (since %s), and the code expired at %s: it was used on another machine, or the master was out of reach until then; "+
		"nothing was changed here; fix: on the master `appliance invite NAME` again, then here `appliance join --force CODE`",
		ErrCodeRefused, began.Format(time.RFC3339), s.Expires.Format(time.RFC3339))
}

// refused turns the master's final no into ErrCodeRefused, with the fix.
func refused(err error, keyFile string) error {
	var r *meshsync.RefusedError
	switch {
	case errors.As(err, &r) && r.Status == http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrCodeRefused, r.Reason)
	case errors.Is(err, meshsync.ErrNotListed):
		return fmt.Errorf("%w: the master does not list this node with the join code's key: the code was used already (by another machine?), or the node was removed; "+
			"nothing was changed here; fix: on the master `appliance invite NAME` again (after `appliance remove NAME` if the other machine must not be in the cluster), then here `appliance join --force CODE`", ErrCodeRefused)
	}
	return nil
}

// use switches to next once the master said yes, and waits until the
// master answers it.
func (s *Switch) use(ctx context.Context, next wgtypes.Key) error {
	if err := s.App.UseKey(next); err != nil {
		return fmt.Errorf("join: switching to this node's own key failed: %w; fix: run `appliance invite` for this node again on the master and `appliance join --force` here", err)
	}
	for range 60 {
		if s.App.ReachMaster(ctx) == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	s.done(next)
	return nil
}

func (s *Switch) done(key wgtypes.Key) {
	os.Remove(s.KeyFile + NextSuffix)
	os.Remove(s.KeyFile + InvitedSuffix)
	s.Log.Info("join: this node's own key replaces the join code's; the code opens nothing now", "public_key", key.PublicKey().String())
}

func readKey(path string) (wgtypes.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	return wgtypes.ParseKey(strings.TrimSpace(string(data)))
}

func readOrMakeKey(path string) (wgtypes.Key, error) {
	if data, err := os.ReadFile(path); err == nil {
		return wgtypes.ParseKey(strings.TrimSpace(string(data)))
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return k, err
	}
	return k, atomicfile.Secret(path, []byte(k.String()+"\n"))
}

// Recover finishes a switch that stopped half way, before the cluster file
// is loaded at start: UseKey writes the file first and the key last, so a
// node stopped between the two has a file that names KEY.next for it
// while KEY still holds the code's key. The key moves over. It reports
// whether it did.
func Recover(keyFile string, cluster []byte) (bool, error) {
	name, _ := Marked(keyFile)
	if name == "" {
		return false, nil
	}
	next, err := readKey(keyFile + NextSuffix)
	if err != nil {
		return false, nil
	}
	cl, err := configs.Parse(cluster, "the cluster file")
	if err != nil {
		return false, nil
	}
	self, ok := cl.NodeByName(name)
	if !ok || self.PublicKey != next.PublicKey() {
		return false, nil
	}
	if current, err := readKey(keyFile); err == nil && current == next {
		return false, nil
	}
	return true, atomicfile.Secret(keyFile, []byte(next.String()+"\n"))
}
