package configs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// NewToken returns a random k3s token: 32 bytes as hex, a bare password
// in k3s's terms.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}

// CreateToken writes a new token to path, created 0600 (its directory
// 0700), unless a file is already there; it says whether it made one.
func CreateToken(path string) (bool, error) {
	err := atomicfile.CreateSecret(path, []byte(NewToken()+"\n"))
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return err == nil, err
}
