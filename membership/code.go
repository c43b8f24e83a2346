// Package invite is adding a node with two commands: the join code that
// `appliance invite` prints on the master and `appliance join` reads on the
// new node, and the master's record of the invites not yet used.
//
// A code carries what the new node needs to reach the master through the
// tunnel: a cluster file with the master's settings and two entries (the
// master's and its own), its name, and its private key unless the operator
// made the key on the node (--public-key). From there the node follows the
// master's file and fetches its token over wg0, as every node does.
package membership

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Prefix starts every code; the digit is the format's version.
const Prefix = "wgk3s1-"

// maxCode bounds what Parse reads (a code for a big cluster file's
// settings stays far below).
const maxCode = 64 << 10

// Code is what a join code carries.
type Code struct {
	// Cluster is a cluster file: the master's settings, the master's entry
	// and the new node's. The first sync replaces it with the master's.
	Cluster []byte
	// Node is the new node's name in it.
	Node string
	// Key is the new node's private key; nil when the operator made the key
	// on the node (the code then holds no secret).
	Key *wgtypes.Key
	// Expires is when the master stops waiting for the node.
	Expires time.Time
}

// String never shows the key.
func (c Code) String() string {
	return fmt.Sprintf("join code for %s (key %s, expires %s)", c.Node, map[bool]string{true: "included", false: "not included"}[c.Key != nil], c.Expires.UTC().Format(time.RFC3339))
}

// GoString never shows the key.
func (c Code) GoString() string { return c.String() }

type wire struct {
	Cluster string `json:"c"`
	Node    string `json:"n"`
	Key     []byte `json:"k,omitempty"`
	Expires int64  `json:"e"`
}

// Encode returns the code as one line: Prefix, then base64url of the
// compressed fields and a 4-byte SHA-256 checksum, so that a mistyped or
// cut code is refused rather than half used.
func (c Code) Encode() (string, error) {
	w := wire{Cluster: string(c.Cluster), Node: c.Node, Expires: c.Expires.Unix()}
	if c.Key != nil {
		w.Key = c.Key[:]
	}
	js, err := json.Marshal(w)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	zw, err := flate.NewWriter(&b, flate.BestCompression)
	if err != nil {
		return "", err
	}
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return "", err
	}
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:4])
	return Prefix + base64.RawURLEncoding.EncodeToString(b.Bytes()), nil
}

// ErrMistyped is a code whose checksum does not match.
var ErrMistyped = errors.New("the code is mistyped or cut short (its checksum does not match): copy the whole line `appliance invite` printed, from " + Prefix + " to its end")

// Parse reads a code. Blanks and line breaks inside it (a terminal's
// wrapping) are ignored. It does not check the expiry: see Check.
func Parse(s string) (Code, error) {
	s = strings.Join(strings.Fields(s), "")
	if len(s) > maxCode {
		return Code{}, fmt.Errorf("the code is %d characters, far longer than any join code: give the line `appliance invite` printed", len(s))
	}
	if !strings.HasPrefix(s, Prefix) {
		if strings.HasPrefix(s, "wgk3s") {
			return Code{}, fmt.Errorf("this join code is from another version of wgk3s (it does not start with %s): run `appliance invite` on the master with this node's version", Prefix)
		}
		return Code{}, fmt.Errorf("not a join code: a code starts with %s; run `appliance invite NAME` on the master to get one", Prefix)
	}
	// Strict: the last character of unpadded base64 carries 2 or 4 bits
	// that decode to nothing; a lenient decoder ignores them, so a typo
	// that changes only those bits would decode to the same bytes and pass
	// the checksum. Strict decoding refuses them set.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s[len(Prefix):])
	if err != nil || len(raw) < 5 {
		return Code{}, ErrMistyped
	}
	body, sum := raw[:len(raw)-4], raw[len(raw)-4:]
	want := sha256.Sum256(body)
	if !bytes.Equal(sum, want[:4]) {
		return Code{}, ErrMistyped
	}
	js, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(body)), 4*maxCode))
	if err != nil {
		return Code{}, ErrMistyped
	}
	var w wire
	if err := json.Unmarshal(js, &w); err != nil {
		return Code{}, ErrMistyped
	}
	c := Code{Cluster: []byte(w.Cluster), Node: w.Node, Expires: time.Unix(w.Expires, 0)}
	if w.Key != nil {
		k, err := wgtypes.NewKey(w.Key)
		if err != nil {
			return Code{}, ErrMistyped
		}
		c.Key = &k
	}
	if c.Node == "" || len(c.Cluster) == 0 || w.Expires == 0 {
		return Code{}, ErrMistyped
	}
	return c, nil
}

// Check refuses a code that expired at now.
func (c Code) Check(now time.Time) error {
	if !now.Before(c.Expires) {
		return fmt.Errorf("this join code for %s expired at %s: run `appliance invite %s` on the master again (the master removes an expired invite from its file at its next reload)",
			c.Node, c.Expires.UTC().Format(time.RFC3339), c.Node)
	}
	return nil
}
