package meshsync

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Request and answer headers of the authenticated protocol.
const (
	HeaderNode  = "Wgk3s-Node"  // the follower's WireGuard public key, base64
	HeaderTime  = "Wgk3s-Time"  // unix seconds
	HeaderNonce = "Wgk3s-Nonce" // 16 random bytes, hex; answers are bound to it
	HeaderAuth  = "Wgk3s-Auth"  // HMAC-SHA256, base64
)

// MaxSkew is how far a request's time may be from the master's clock.
// A follower whose clock is further off learns the master's time from an
// authenticated refusal and asks again (see Client).
const MaxSkew = 90 * time.Second

// label separates these keys from any other use of the same X25519 pair
// (WireGuard's own handshake derives its keys with other labels).
const label = "wgk3s meshsync v1"

// pairKeys are the two HMAC keys of one follower and one master: one for
// requests, one for answers, so that an answer can never pass for a
// request.
type pairKeys struct {
	request, answer []byte
}

// derive computes the pair's keys from one side's private key and the
// other side's public key: X25519 gives both sides the same secret (the
// follower from its key and the master's public key, the master from its
// key and the follower's public key), and HKDF-SHA256 turns it into the
// two keys, bound to both public keys.
func derive(private, peer, follower, master wgtypes.Key) (pairKeys, error) {
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return pairKeys{}, err
	}
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return pairKeys{}, err
	}
	shared, err := priv.ECDH(pub) // refuses a low-order point (an all-zero secret)
	if err != nil {
		return pairKeys{}, fmt.Errorf("the key pair gives no shared secret: %w", err)
	}
	info := append(append([]byte(label), follower[:]...), master[:]...)
	okm, err := hkdf.Key(sha256.New, shared, []byte(label), string(info), 64)
	if err != nil {
		return pairKeys{}, err
	}
	return pairKeys{request: okm[:32], answer: okm[32:]}, nil
}

func mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}

// requestMAC covers everything a request asks: method, path and query
// (the revision), the follower's key, the time and the nonce.
func requestMAC(k pairKeys, method, uri, node, ts, nonce string) []byte {
	return mac(k.request, method, uri, node, ts, nonce)
}

// answerMAC binds an answer to the request it answers (its nonce) and
// covers its status, time, revision and body.
func answerMAC(k pairKeys, nonce string, status int, ts, rev string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return mac(k.answer, nonce, strconv.Itoa(status), ts, rev, hex.EncodeToString(sum[:]))
}

func newNonce() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// sign adds the follower's authentication to req.
func sign(req *http.Request, k pairKeys, self wgtypes.Key, now time.Time) (nonce string) {
	nonce = newNonce()
	node, ts := self.String(), strconv.FormatInt(now.Unix(), 10)
	req.Header.Set(HeaderNode, node)
	req.Header.Set(HeaderTime, ts)
	req.Header.Set(HeaderNonce, nonce)
	req.Header.Set(HeaderAuth, base64.StdEncoding.EncodeToString(requestMAC(k, req.Method, req.URL.RequestURI(), node, ts, nonce)))
	return nonce
}

// errForged is an answer that does not carry the master's authentication.
var errForged = errors.New("the answer is not authenticated by the master's key (not from the master's appliance, or the keys in the files differ)")

// verifyAnswer checks an answer's authentication against the request's
// nonce and returns the master's time.
func verifyAnswer(h http.Header, k pairKeys, nonce string, status int, body []byte) (time.Time, error) {
	got, err := base64.StdEncoding.DecodeString(h.Get(HeaderAuth))
	if err != nil || !hmac.Equal(got, answerMAC(k, nonce, status, h.Get(HeaderTime), h.Get(HeaderRevision), body)) {
		return time.Time{}, errForged
	}
	sec, err := strconv.ParseInt(h.Get(HeaderTime), 10, 64)
	if err != nil {
		return time.Time{}, errForged
	}
	return time.Unix(sec, 0), nil
}
