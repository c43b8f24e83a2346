// Package snapshot keeps a lone master's datastore on the other nodes.
//
// The master takes a consistent copy of k3s's SQLite datastore (VACUUM
// INTO, SQLite's own online copy: a single read transaction), bundles it
// with the few files a new machine needs beside it, and seals the bundle
// with a key derived from the k3s server token (AES-256-GCM, so that a
// copy that was changed, cut or sealed under another token is refused).
// Every other node keeps the last few sealed copies (Store); agents,
// which never hold the server token, hold ciphertext they cannot read.
// On a new machine, `appliance restore` opens the newest copy with the
// token the operator kept and puts the datastore back.
package snapshot

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// magic starts every sealed snapshot; the version is its last byte.
const magic = "wgk3snp1"

// headerLen is the magic, the time it was taken (Unix nanoseconds) and
// the GCM nonce; the magic and the time are authenticated with the data.
const headerLen = len(magic) + 8 + 12

// hkdfLabel separates this key from every other use of the token.
const hkdfLabel = "wgk3s datastore snapshot v1"

// Errors that Open and Peek return, wrapped.
var (
	// ErrNotASnapshot: the data does not start like a sealed snapshot.
	ErrNotASnapshot = errors.New("not a wgk3s snapshot")
	// ErrCannotOpen: the token is not the one it was sealed with, or the
	// snapshot was changed or cut.
	ErrCannotOpen = errors.New("the snapshot does not open with this token (another cluster's token, or a changed or cut copy)")
)

// Info is what a sealed snapshot says of itself without the token.
type Info struct {
	// Taken is when the master took it; it orders the copies.
	Taken time.Time
	Size  int
}

// Peek reads the header of a sealed snapshot.
func Peek(sealed []byte) (Info, error) {
	if len(sealed) < headerLen+16 || string(sealed[:len(magic)]) != magic {
		return Info{}, ErrNotASnapshot
	}
	ns := binary.BigEndian.Uint64(sealed[len(magic):])
	return Info{Taken: time.Unix(0, int64(ns)).UTC(), Size: len(sealed)}, nil
}

func aead(token []byte) (cipher.AEAD, error) {
	if len(token) == 0 {
		return nil, errors.New("no token to seal the snapshot with")
	}
	key, err := hkdf.Key(sha256.New, token, nil, hkdfLabel, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts bundle under token, stamped with taken.
func Seal(token, bundle []byte, taken time.Time) ([]byte, error) {
	g, err := aead(token)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerLen, headerLen+len(bundle)+g.Overhead())
	copy(out, magic)
	binary.BigEndian.PutUint64(out[len(magic):], uint64(taken.UnixNano()))
	nonce := out[len(magic)+8 : headerLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.Seal(out, nonce, bundle, out[:len(magic)+8]), nil
}

// Open checks and decrypts a sealed snapshot.
func Open(token, sealed []byte) ([]byte, Info, error) {
	info, err := Peek(sealed)
	if err != nil {
		return nil, Info{}, err
	}
	g, err := aead(token)
	if err != nil {
		return nil, Info{}, err
	}
	bundle, err := g.Open(nil, sealed[len(magic)+8:headerLen], sealed[headerLen:], sealed[:len(magic)+8])
	if err != nil {
		return nil, Info{}, fmt.Errorf("%w", ErrCannotOpen)
	}
	return bundle, info, nil
}
