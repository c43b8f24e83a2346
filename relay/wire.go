package relay

import (
	"crypto/subtle"
	"encoding/binary"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuard's messages (the whitepaper, section 5.4; wireguard-go's
// device/noise-protocol.go): a little-endian type in the first four
// bytes, then fixed layouts.
const (
	typeInitiation = 1
	typeResponse   = 2
	typeCookie     = 3
	typeTransport  = 4

	sizeInitiation   = 148 // type, sender, ephemeral, static, timestamp, mac1, mac2
	sizeResponse     = 92  // type, sender, receiver, ephemeral, empty, mac1, mac2
	sizeCookie       = 64  // type, receiver, nonce, cookie
	minSizeTransport = 32  // type, receiver, counter, an empty payload's tag

	mac1Initiation = 116 // where the initiation's mac1 starts
	mac1Response   = 60  // where the response's mac1 starts
)

// messageType is the WireGuard type of pkt, or 0.
func messageType(pkt []byte) uint32 {
	if len(pkt) < 4 {
		return 0
	}
	return binary.LittleEndian.Uint32(pkt[:4])
}

// u32 reads the little-endian index at off.
func u32(pkt []byte, off int) uint32 { return binary.LittleEndian.Uint32(pkt[off : off+4]) }

// mac1Key is HASH(LABEL_MAC1 || responder's public key): a handshake
// message's mac1 is keyed by the public key of the node it is for, which
// is how a relay that knows every public key finds where it goes without
// decrypting anything.
func mac1Key(pub wgtypes.Key) [blake2s.Size]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte("mac1----"))
	h.Write(pub[:])
	var k [blake2s.Size]byte
	h.Sum(k[:0])
	return k
}

// mac1Valid checks the mac1 of a handshake message whose mac1 starts at
// off against key: MAC(key, msg[:off]), keyed BLAKE2s-128.
func mac1Valid(key *[blake2s.Size]byte, msg []byte, off int) bool {
	h, _ := blake2s.New128(key[:])
	h.Write(msg[:off])
	var sum [blake2s.Size128]byte
	h.Sum(sum[:0])
	return subtle.ConstantTimeCompare(sum[:], msg[off:off+blake2s.Size128]) == 1
}
