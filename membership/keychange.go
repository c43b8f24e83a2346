package membership

import (
	"fmt"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// A node joined by a code that carried its key replaces that key with one
// made on it, at its first contact with the master, so that the code
// opens nothing afterwards. The master's side:
//
//	node (code's key K0)          master                       other nodes
//	POST /v1/key?new=K1  ──────▶  AcceptKey: file K0→K1,
//	                              invite.NewKey = K1 (lock)
//	                              reload: wg0 keeps K0, K1 standby
//	                              publish, wait until every ──▶ take the file:
//	                              other node has it             K0 kept, K1 standby
//	◀──────────── 204 ──────────
//	switch to K1, handshake ────▶ K1 promoted (tunnel)  ──────▶ K1 promoted
//	                              ForgetUsed: K1 handshook,
//	                              the invite goes
//
// Every step waits for a condition, none for a timer. A lost 204: the node
// asks again with K0 (still accepted for this one request) and is told
// yes again.

// AcceptKey records next as node's key in place of key, the code's: only
// for a node with an open invite whose code carried that key. Asked again
// with the same next key it changes nothing and says yes. It returns a
// *meshsync.Refusal for a change it will never make. The caller has the
// running appliance apply the file, and answers once the other nodes hold
// it (appliance.App).
func (m Master) AcceptKey(node string, key, next wgtypes.Key) (changed bool, err error) {
	err = m.Files.Edit(func(data []byte, invites []Invite) ([]byte, []Invite, error) {
		rec, ok := find(invites, node)
		switch {
		case !ok || rec.PublicKey != key.String() || !rec.Rotate:
			return nil, nil, &meshsync.Refusal{Reason: fmt.Sprintf("%s has no open invite whose code carried this key: only a node joined by `appliance join` changes its key this way", node)}
		case rec.NewKey == next.String():
			return data, invites, nil
		case rec.NewKey != "":
			return nil, nil, &meshsync.Refusal{Reason: fmt.Sprintf("the join code for %s was used already: another machine replaced its key; fix: on the master `appliance remove %s` (if that machine must not be in the cluster) and `appliance invite %s`, then `appliance join --force` with the new code here", node, node, node)}
		case !m.now().Before(rec.Expires):
			return nil, nil, &meshsync.Refusal{Reason: fmt.Sprintf("%s's invite expired at %s; fix: `appliance invite %s` on the master again", node, rec.Expires.Format(time.RFC3339), node)}
		}
		nd, err := configs.SetNodeKey(data, node, next.String())
		if err != nil {
			return nil, nil, err
		}
		if _, err := configs.LoadData(nd, "the cluster file with "+node+"'s new key", configs.Options{Role: configs.RoleMaster}); err != nil {
			return nil, nil, fmt.Errorf("the file with %s's new key does not validate: %w", node, err)
		}
		rec.NewKey, changed = next.String(), true
		return nd, put(invites, rec), nil
	})
	return changed, err
}

// Retiring are the keys of nodes whose key change is under way: the sync
// answers their key change again (meshsync.Node.KeyChangeOnly).
func (m Master) Retiring() ([]Retired, error) {
	_, invites, err := m.Files.Read()
	if err != nil {
		return nil, err
	}
	var out []Retired
	for _, r := range invites {
		if r.NewKey == "" {
			continue
		}
		if k, err := wgtypes.ParseKey(r.PublicKey); err == nil {
			out = append(out, Retired{Node: r.Node, Key: k})
		}
	}
	return out, nil
}

// Retired is a node's key on its way out.
type Retired struct {
	Node string
	Key  wgtypes.Key
}
