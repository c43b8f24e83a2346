package configs

import (
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrLowOrderKey is a public key that is one of Curve25519's points of
// small order (all zeros, one, and the others): X25519 with it gives the
// same all-zero secret whatever the private key, so no handshake with it
// can succeed and every node that lists it logs WireGuard errors.
var ErrLowOrderKey = errors.New("a low-order Curve25519 point, which no WireGuard key pair has")

// probeScalar is any private key: clamping clears the cofactor bits, so a
// point of small order times any clamped scalar is the identity.
var probeScalar = func() *ecdh.PrivateKey {
	k, err := ecdh.X25519().NewPrivateKey(make([]byte, 32))
	if err != nil {
		panic(err)
	}
	return k
}()

// CheckPublicKey refuses a key no WireGuard key pair can have.
func CheckPublicKey(k wgtypes.Key) error {
	pub, err := ecdh.X25519().NewPublicKey(k[:])
	if err != nil {
		return ErrLowOrderKey
	}
	if _, err := probeScalar.ECDH(pub); err != nil {
		return ErrLowOrderKey
	}
	return nil
}

// ParsePublicKey reads a WireGuard public key (44 characters of base64)
// and refuses one that cannot be a real key.
func ParsePublicKey(s string) (wgtypes.Key, error) {
	k, err := wgtypes.ParseKey(strings.TrimSpace(s))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("not a WireGuard key (want 44 characters of base64 for 32 bytes)")
	}
	if err := CheckPublicKey(k); err != nil {
		return wgtypes.Key{}, err
	}
	return k, nil
}

// GenerateKey makes a new private key and, when path is not "", writes
// it there, created 0600 (an existing file is an error wrapping
// fs.ErrExist: it is never overwritten). `appliance genkey`.
func GenerateKey(path string) (wgtypes.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return k, fmt.Errorf("generating a key: %w", err)
	}
	if path == "" {
		return k, nil
	}
	return k, atomicfile.CreateSecret(path, []byte(k.String()+"\n"))
}

// ReadPrivateKey reads a private key from r (`appliance pubkey`). Its
// error never holds the input: it is meant to be a secret.
func ReadPrivateKey(r io.Reader) (wgtypes.Key, error) {
	data, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("reading stdin: %w", err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return wgtypes.Key{}, errors.New("stdin does not hold a WireGuard private key (want the base64 line `appliance genkey` prints)")
	}
	return k, nil
}
