package main

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// signer signs the way rpm 4.11 verifies: an RSA primary key, SHA256, a
// v4 signature whose creation time is not critical.
type signer struct {
	entity *openpgp.Entity
	config *packet.Config
}

// loadSigner reads an OpenPGP secret key file and refuses a key rpm 4.11
// cannot verify, saying which key works.
func loadSigner(path, passphrase string) (*signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ring openpgp.EntityList
	if bytes.Contains(data, []byte("-----BEGIN PGP")) {
		ring, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		ring, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("RPM_SIGNING_KEY %s: not an OpenPGP key: %w", path, err)
	}
	if len(ring) != 1 {
		return nil, fmt.Errorf("RPM_SIGNING_KEY %s holds %d keys; give it one", path, len(ring))
	}
	e := ring[0]
	fix := "fix: use an RSA key that signs with its primary key, such as one made by `gpg --quick-gen-key 'wgk3s builds <you@example.org>' rsa4096 sign never`, then `gpg --export-secret-keys --armor KEYID > key.asc`"
	if e.PrivateKey == nil {
		return nil, fmt.Errorf("RPM_SIGNING_KEY %s is a public key; a secret key signs; %s", path, fix)
	}
	switch e.PrimaryKey.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly:
	default:
		return nil, fmt.Errorf("RPM_SIGNING_KEY %s is not an RSA key (algorithm %d): CentOS 7's rpm 4.11 cannot import it (\"key 1 import failed\") nor verify what it signs; %s",
			path, e.PrimaryKey.PubKeyAlgo, fix)
	}
	for _, sub := range e.Subkeys {
		if sub.Sig != nil && sub.Sig.FlagsValid && sub.Sig.FlagSign && !sub.Revoked(time.Now()) {
			return nil, fmt.Errorf("RPM_SIGNING_KEY %s signs with a subkey (%X): CentOS 7's rpm 4.11 only verifies signatures made by the primary key (it says NOKEY after rpm --import); %s",
				path, sub.PublicKey.KeyId, fix)
		}
	}
	if e.PrivateKey.Encrypted {
		if passphrase == "" {
			return nil, fmt.Errorf("RPM_SIGNING_KEY %s is protected by a passphrase; put it in NFPM_RPM_PASSPHRASE", path)
		}
		if err := e.PrivateKey.Decrypt([]byte(passphrase)); err != nil {
			return nil, fmt.Errorf("RPM_SIGNING_KEY %s: the passphrase in NFPM_RPM_PASSPHRASE does not open it: %w", path, err)
		}
	}
	// rpm 4.11 cannot parse a creation time marked critical (it then reads
	// the signature's date as 1970): go-crypto calls leaving it unmarked
	// "insecure", for OpenPGP implementations that would ignore it.
	id := e.PrimaryKey.KeyId
	return &signer{entity: e, config: &packet.Config{DefaultHash: crypto.SHA256, SigningKeyId: id, InsecureGenerateNonCriticalSignatureCreationTime: true}}, nil
}

// sign returns a detached binary signature of data.
func (s *signer) sign(data []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := openpgp.DetachSign(&out, s.entity, bytes.NewReader(data), s.config); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	if out.Len() == 0 || strings.HasPrefix(out.String(), "-----") {
		return nil, errors.New("signing gave no binary signature")
	}
	return out.Bytes(), nil
}
