package configs

import (
	"encoding/base64"
	"errors"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// lowOrder are the encodings of Curve25519's points of small order
// (RFC 7748's list as libsodium and WireGuard's blacklist give it),
// including the non-canonical ones.
var lowOrder = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

func TestLowOrderKeysAreRefused(t *testing.T) {
	for _, h := range lowOrder {
		var k wgtypes.Key
		for i := range k {
			var b byte
			for _, c := range h[2*i : 2*i+2] {
				b <<= 4
				switch {
				case c >= '0' && c <= '9':
					b |= byte(c - '0')
				default:
					b |= byte(c-'a') + 10
				}
			}
			k[i] = b
		}
		s := base64.StdEncoding.EncodeToString(k[:])
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrLowOrderKey) {
			t.Errorf("%s (%s): err = %v, want ErrLowOrderKey", h, s, err)
		}
	}
	for range 100 {
		priv, _ := wgtypes.GeneratePrivateKey()
		if _, err := ParsePublicKey(priv.PublicKey().String()); err != nil {
			t.Fatalf("a real public key refused: %v", err)
		}
	}
	if _, err := ParsePublicKey("not a key"); err == nil {
		t.Error("garbage accepted")
	}
}
