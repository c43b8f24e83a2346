package membership

import (
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Tidied is what a look at the open invites did.
type Tidied struct {
	// Used are the invites whose node made its first handshake (with
	// the key it replaced the code's with, where it did): forgotten.
	Used []Invite
	// Expired are the invites that ran out first: their nodes were
	// removed from the file, which the caller reloads.
	Expired []Invite
	// Open counts the invites still waiting.
	Open int
}

// Tidy looks at the open invites: one whose node made a handshake with
// the master (handshook) is used and forgotten; one that expired before
// that has its node removed from the file. Under the lock, like every
// edit.
func (m Master) Tidy(handshook func(wgtypes.Key) bool) (Tidied, error) {
	var t Tidied
	now := m.now()
	err := m.Files.Edit(func(data []byte, invites []Invite) ([]byte, []Invite, error) {
		t = Tidied{}
		next := data
		var keep []Invite
		for _, r := range invites {
			switch {
			case used(r, handshook):
				t.Used = append(t.Used, r)
			case !now.Before(r.Expires) && r.NewKey != "":
				// The node changed its key and never used it: its entry
				// (with its own key) stays; the record goes.
				t.Used = append(t.Used, r)
			case !now.Before(r.Expires):
				d, ok := withoutExpired(next, r)
				next = d
				if ok {
					t.Expired = append(t.Expired, r)
				}
			default:
				keep = append(keep, r)
			}
		}
		t.Open = len(keep)
		return next, keep, nil
	})
	return t, err
}

func used(r Invite, handshook func(wgtypes.Key) bool) bool {
	k := r.PublicKey
	if r.Rotate {
		k = r.NewKey
	}
	key, err := wgtypes.ParseKey(k)
	return err == nil && handshook != nil && handshook(key)
}

// withoutExpired removes r's node from data if its entry still has the
// invite's key.
func withoutExpired(data []byte, r Invite) ([]byte, bool) {
	cl, err := configs.Parse(data, "the cluster file")
	if err != nil {
		return data, false
	}
	n, ok := cl.NodeByName(r.Node)
	if !ok || n.PublicKey.String() != r.PublicKey {
		return data, false
	}
	next, err := configs.RemoveNode(data, r.Node)
	if err != nil {
		return data, false
	}
	return next, true
}

// Expired says whether any open invite ran out at now (a reason for the
// running master to tidy now rather than at its next check).
func Expired(invites []Invite, now time.Time) bool {
	for _, r := range invites {
		if !now.Before(r.Expires) {
			return true
		}
	}
	return false
}
