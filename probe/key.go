package probe

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PairKey is the key the probe messages between this node (private) and
// peer are authenticated with: X25519 of the pair's WireGuard keys, the
// same on both sides, through HKDF with a label of its own, so that it is
// neither WireGuard's key nor the sync's. Order does not matter.
func PairKey(private wgtypes.Key, peer wgtypes.Key) ([32]byte, error) {
	var out [32]byte
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return out, err
	}
	pub, err := ecdh.X25519().NewPublicKey(peer[:])
	if err != nil {
		return out, err
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return out, errors.New("probe: no shared secret with this key (a low-order point)")
	}
	a, b := private.PublicKey(), peer
	if string(a[:]) > string(b[:]) {
		a, b = b, a
	}
	info := append(append([]byte("wgk3s probe v1"), a[:]...), b[:]...)
	k, err := hkdf.Key(sha256.New, shared, []byte("wgk3s probe v1"), string(info), 32)
	if err != nil {
		return out, err
	}
	copy(out[:], k)
	return out, nil
}
