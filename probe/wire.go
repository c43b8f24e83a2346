// Package probe is the nodes' own small messages on WireGuard's UDP port,
// beside WireGuard's: a ping and its pong, which show whether a path
// between two nodes works both ways and how long a round trip takes, and
// the candidates a node can be reached at (its addresses on its own
// networks, where the mesh's other nodes may find it directly). They are
// authenticated with a key only the two nodes' WireGuard keys give, so a
// pong cannot be forged to lure traffic onto a dead path, and a relay
// that forwards one between two nodes can neither read nor change it.
//
// Layout (all numbers little-endian):
//
//	[0:4]   type: Ping, Pong or Candidates, a value WireGuard never uses
//	[4:36]  the sender's public key
//	[36:68] the receiver's public key (a relay forwards by it)
//	[68:80] a transaction id (a pong echoes its ping's)
//	[80:n]  addresses, 18 bytes each (16-byte IP, 2-byte port): a pong's
//	        first is where its ping came from; a ping's and a Candidates'
//	        are where the sender can be reached
//	[n:n+16] MAC: keyed BLAKE2s-128 over [0:n], keyed by the pair's key
package probe

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Message types: byte 0 names the kind, bytes 1 to 3 are "wgk"; WireGuard
// uses 1 to 4 and drops any other type.
const (
	TypePing       uint32 = 0x6b6777d1
	TypePong       uint32 = 0x6b6777d2
	TypeCandidates uint32 = 0x6b6777d3
)

const (
	headerSize = 80
	addrSize   = 18
	macSize    = blake2s.Size128
	// MaxAddrs bounds the addresses a message carries.
	MaxAddrs = 8
	// MaxSize is the largest message.
	MaxSize = headerSize + MaxAddrs*addrSize + macSize
)

// Message is a decoded probe message.
type Message struct {
	Type     uint32
	From, To wgtypes.Key
	TxID     [12]byte
	Addrs    []netip.AddrPort
}

// IsProbe says whether pkt is a probe message (by its type).
func IsProbe(pkt []byte) bool {
	if len(pkt) < headerSize+macSize {
		return false
	}
	switch binary.LittleEndian.Uint32(pkt[:4]) {
	case TypePing, TypePong, TypeCandidates:
		return true
	}
	return false
}

// Destination is the receiver's key of a probe message, which a relay
// forwards by; ok is false for anything else.
func Destination(pkt []byte) (to wgtypes.Key, ok bool) {
	if !IsProbe(pkt) {
		return to, false
	}
	copy(to[:], pkt[36:68])
	return to, true
}

// Sender is the sender's key of a probe message, unchecked.
func Sender(pkt []byte) (from wgtypes.Key, ok bool) {
	if !IsProbe(pkt) {
		return from, false
	}
	copy(from[:], pkt[4:36])
	return from, true
}

// Encode appends m, authenticated with key, to buf.
func (m Message) Encode(buf []byte, key *[32]byte) []byte {
	b := binary.LittleEndian.AppendUint32(buf, m.Type)
	b = append(b, m.From[:]...)
	b = append(b, m.To[:]...)
	b = append(b, m.TxID[:]...)
	for i, a := range m.Addrs {
		if i == MaxAddrs {
			break
		}
		ip := a.Addr().As16()
		b = append(b, ip[:]...)
		b = binary.LittleEndian.AppendUint16(b, a.Port())
	}
	return append(b, mac(key, b[len(buf):])...)
}

// ErrBadMessage is a probe message that does not decode or authenticate.
var ErrBadMessage = errors.New("probe: not an authentic probe message")

// Decode reads pkt, authenticated with key (the pair key of its sender and
// this node: see PairKey).
func Decode(pkt []byte, key *[32]byte) (Message, error) {
	n := len(pkt) - macSize
	if !IsProbe(pkt) || (n-headerSize)%addrSize != 0 || n > MaxSize-macSize {
		return Message{}, ErrBadMessage
	}
	if subtle.ConstantTimeCompare(mac(key, pkt[:n]), pkt[n:]) != 1 {
		return Message{}, ErrBadMessage
	}
	m := Message{Type: binary.LittleEndian.Uint32(pkt[:4])}
	copy(m.From[:], pkt[4:36])
	copy(m.To[:], pkt[36:68])
	copy(m.TxID[:], pkt[68:80])
	for off := headerSize; off < n; off += addrSize {
		ip := netip.AddrFrom16([16]byte(pkt[off : off+16])).Unmap()
		m.Addrs = append(m.Addrs, netip.AddrPortFrom(ip, binary.LittleEndian.Uint16(pkt[off+16:off+18])))
	}
	return m, nil
}

func mac(key *[32]byte, data []byte) []byte {
	h, _ := blake2s.New128(key[:])
	h.Write(data)
	return h.Sum(nil)
}
