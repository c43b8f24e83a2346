package meshsync

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestKeyChange: a node hands the master its next key, signed with its
// current one; the master's Accept decides, Then runs after the answer;
// without Rotate, with a bad key, or unauthenticated, nothing changes.
func TestKeyChange(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "x")
	next := genKey(t).PublicKey()
	ask := func(key wgtypes.Key, newKey string) int {
		req, _, _ := c.request(http.MethodPost, PathKey+"?new="+url.QueryEscape(newKey), key, time.Now())
		return serve(c.srv, req).Code
	}
	var accepted []wgtypes.Key
	then := 0
	refuse := error(nil)
	c.srv.SetRotate(Rotate{
		Accept: func(n Node, k wgtypes.Key) error {
			if n.Name != "k3s-node-1" || n.Key != c.node.PublicKey() {
				t.Errorf("Accept got %+v", n)
			}
			if refuse != nil {
				return refuse
			}
			accepted = append(accepted, k)
			return nil
		},
		Then: func() { then++ },
	})
	for name, bad := range map[string]string{"not a key": "abc", "the same key": c.node.PublicKey().String(), "zero": wgtypes.Key{}.String()} {
		if code := ask(c.node, bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
	if code := ask(genKey(t), next.String()); code != http.StatusForbidden {
		t.Errorf("another key's request: %d, want 403", code)
	}
	refuse = errors.New("no open invite for k3s-node-1")
	if code := ask(c.node, next.String()); code != http.StatusConflict || len(accepted) != 0 || then != 0 {
		t.Errorf("refused: %d, accepted %v, then %d", code, accepted, then)
	}
	refuse = nil
	if code := ask(c.node, next.String()); code != http.StatusNoContent || len(accepted) != 1 || accepted[0] != next || then != 1 {
		t.Errorf("accepted: %d, accepted %v, then %d", code, accepted, then)
	}
}

func TestKeyChangeRefusedWithoutRotate(t *testing.T) {
	c := newCluster(t, "192.168.2.2")
	c.publish(t, "x")
	req, _, _ := c.request(http.MethodPost, PathKey+"?new="+url.QueryEscape(genKey(t).PublicKey().String()), c.node, time.Now())
	if w := serve(c.srv, req); w.Code != http.StatusForbidden {
		t.Errorf("no Rotate: %d, want 403", w.Code)
	}
}
