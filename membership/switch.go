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
	// Retry is the first pause after an unanswered request (default 1 s,
	// doubling to 30 s).
	Retry time.Duration
}

// Pending says whether the key in keyFile came in a code and is still to
// be replaced.
func Pending(keyFile string) bool {
	_, err := os.Stat(keyFile + InvitedSuffix)
	return err == nil
}

// Run replaces the code's key. It returns nil when done (or when ctx
// ends), and an error wrapping ErrCodeRefused when the master will never
// take this node's key: the appliance then stops.
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
	wait := s.Retry
	if wait == 0 {
		wait = time.Second
	}
	for unanswered := 0; ; unanswered++ {
		err := s.App.ChangeKey(ctx, next.PublicKey())
		if err == nil {
			return s.use(ctx, next)
		}
		if err := refused(err, s.KeyFile); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		// The master may have taken the key and lost its answer long ago
		// (its wg0 then no longer knows the code's key): try the new one.
		if unanswered%4 == 3 && s.try(ctx, next, current) {
			return nil
		}
		s.Log.Debug("join: the master does not take this node's own key yet", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
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

// try switches to next and keeps it if the master answers it within 15 s;
// otherwise it goes back to current.
func (s *Switch) try(ctx context.Context, next, current wgtypes.Key) bool {
	if err := s.App.UseKey(next); err != nil {
		return false
	}
	for range 30 {
		if s.App.ReachMaster(ctx) == nil {
			s.done(next)
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
	s.Log.Info("join: the master does not answer this node's own key; back to the join code's key to ask again")
	if err := s.App.UseKey(current); err != nil {
		s.Log.Error("join: going back to the join code's key failed", "err", err)
	}
	return false
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
	marker, err := os.ReadFile(keyFile + InvitedSuffix)
	if err != nil {
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
	self, ok := cl.NodeByName(strings.TrimSpace(string(marker)))
	if !ok || self.PublicKey != next.PublicKey() {
		return false, nil
	}
	if current, err := readKey(keyFile); err == nil && current == next {
		return false, nil
	}
	return true, atomicfile.Secret(keyFile, []byte(next.String()+"\n"))
}
