package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
)

// The RPM file format (rpm's lib/rpmlead.c, lib/header.c): a 96-byte lead,
// the signature header padded to 8 bytes, the main header, the payload. A
// header is 16 bytes of magic and counts, the index entries (16 bytes
// each: tag, type, offset into the data, count) and the data; its first
// entry is the region tag, whose 16-byte trailer ends the data.
const (
	leadSize  = 96
	entrySize = 16

	typeInt32  = 4
	typeString = 6
	typeBin    = 7

	tagRegionSignatures = 62 // RPMTAG_HEADERSIGNATURES

	sigRSA    = 268  // RPMSIGTAG_RSA: a signature of the header
	sigSHA1   = 269  // RPMSIGTAG_SHA1: the header's SHA1, hex
	sigSHA256 = 273  // RPMSIGTAG_SHA256: the header's SHA256, hex
	sigSize   = 1000 // RPMSIGTAG_SIZE: header + payload
	sigPGP    = 1002 // RPMSIGTAG_PGP: a signature of header and payload
	sigMD5    = 1004 // RPMSIGTAG_MD5: the MD5 of header and payload
)

var headerMagic = []byte{0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0}

// entry is one tag of a header.
type entry struct {
	typ, count uint32
	data       []byte
}

// rpmFile is an RPM split into its parts.
type rpmFile struct {
	lead    []byte
	sigs    map[uint32]entry // the signature header's tags, but its region
	header  []byte           // the main header, whole
	payload []byte
}

// parseRPM splits b.
func parseRPM(b []byte) (*rpmFile, error) {
	if len(b) < leadSize || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, errors.New("not an RPM (no lead)")
	}
	f := &rpmFile{lead: b[:leadSize]}
	sigs, sigLen, err := parseHeader(b[leadSize:])
	if err != nil {
		return nil, fmt.Errorf("signature header: %w", err)
	}
	f.sigs = sigs
	at := leadSize + sigLen + (8-sigLen%8)%8
	if at > len(b) {
		return nil, errors.New("truncated after the signature header")
	}
	_, hdrLen, err := parseHeader(b[at:])
	if err != nil {
		return nil, fmt.Errorf("main header: %w", err)
	}
	f.header, f.payload = b[at:at+hdrLen], b[at+hdrLen:]
	return f, nil
}

// parseHeader reads the header at the start of b, without its region tag,
// and returns its length.
func parseHeader(b []byte) (map[uint32]entry, int, error) {
	if len(b) < 16 || !bytes.Equal(b[:8], headerMagic) {
		return nil, 0, errors.New("no header magic")
	}
	n := int(binary.BigEndian.Uint32(b[8:]))
	size := int(binary.BigEndian.Uint32(b[12:]))
	total := 16 + n*entrySize + size
	if n > 1<<16 || size > 1<<28 || total > len(b) {
		return nil, 0, errors.New("truncated")
	}
	data := b[16+n*entrySize : total]
	entries := map[uint32]entry{}
	for i := range n {
		e := b[16+i*entrySize:]
		tag, typ := binary.BigEndian.Uint32(e), binary.BigEndian.Uint32(e[4:])
		off, count := int(int32(binary.BigEndian.Uint32(e[8:]))), binary.BigEndian.Uint32(e[12:])
		if tag == tagRegionSignatures || tag == 63 {
			continue // the region: rebuilt on write
		}
		length, err := dataLen(typ, count, data, off)
		if err != nil {
			return nil, 0, fmt.Errorf("tag %d: %w", tag, err)
		}
		entries[tag] = entry{typ, count, data[off : off+length]}
	}
	return entries, total, nil
}

// dataLen is how many bytes an entry's value takes at off.
func dataLen(typ, count uint32, data []byte, off int) (int, error) {
	if off < 0 || off > len(data) {
		return 0, errors.New("offset out of range")
	}
	var n int
	switch typ {
	case 2, 7: // char, bin
		n = int(count)
	case 3: // int16
		n = 2 * int(count)
	case 4: // int32
		n = 4 * int(count)
	case 5: // int64
		n = 8 * int(count)
	case 6, 8, 9: // string, string array, i18n string: count NUL-ended strings
		for i := 0; i < int(count); i++ {
			end := bytes.IndexByte(data[off+n:], 0)
			if end < 0 {
				return 0, errors.New("unterminated string")
			}
			n += end + 1
		}
	default:
		return 0, fmt.Errorf("unknown type %d", typ)
	}
	if off+n > len(data) {
		return 0, errors.New("value out of range")
	}
	return n, nil
}

// alignment of the types that need it in a header's data.
var alignment = map[uint32]int{3: 2, 4: 4, 5: 8}

// signatureHeader writes a signature header with entries, its region tag
// first, as rpm (and rpmpack) write it.
func signatureHeader(entries map[uint32]entry) []byte {
	tags := make([]uint32, 0, len(entries))
	for t := range entries {
		tags = append(tags, t)
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i] < tags[j] })
	var data bytes.Buffer
	offsets := make([]int, len(tags))
	for i, t := range tags {
		e := entries[t]
		if a, ok := alignment[e.typ]; ok && data.Len()%a != 0 {
			data.Write(make([]byte, a-data.Len()%a))
		}
		offsets[i] = data.Len()
		data.Write(e.data)
	}
	n := len(tags) + 1
	trailer := be32(tagRegionSignatures, typeBin, uint32(-int32(entrySize*n)), entrySize)
	regionOffset := data.Len()
	data.Write(trailer)
	var out bytes.Buffer
	out.Write(headerMagic)
	out.Write(be32(uint32(n), uint32(data.Len())))
	out.Write(be32(tagRegionSignatures, typeBin, uint32(regionOffset), entrySize))
	for i, t := range tags {
		e := entries[t]
		out.Write(be32(t, e.typ, uint32(offsets[i]), e.count))
	}
	out.Write(data.Bytes())
	return out.Bytes()
}

func be32(v ...uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.BigEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// bytes writes the file back.
func (f *rpmFile) bytes() []byte {
	sig := signatureHeader(f.sigs)
	var out bytes.Buffer
	out.Write(f.lead)
	out.Write(sig)
	out.Write(make([]byte, (8-len(sig)%8)%8))
	out.Write(f.header)
	out.Write(f.payload)
	return out.Bytes()
}

// Seal adds the SHA1 and MD5 digests to the RPM in b and, with s, signs
// it; existing signatures are replaced.
func Seal(b []byte, s *signer) ([]byte, error) {
	f, err := parseRPM(b)
	if err != nil {
		return nil, err
	}
	if _, ok := f.sigs[sigSHA256]; !ok {
		return nil, errors.New("no SHA256 header digest: not an RPM nfpm made?")
	}
	sha := sha1.Sum(f.header)
	f.sigs[sigSHA1] = entry{typeString, 1, append([]byte(hex.EncodeToString(sha[:])), 0)}
	all := append(append([]byte{}, f.header...), f.payload...)
	md := md5.Sum(all)
	f.sigs[sigMD5] = entry{typeBin, 16, md[:]}
	f.sigs[sigSize] = entry{typeInt32, 1, be32(uint32(len(all)))}
	delete(f.sigs, sigRSA)
	delete(f.sigs, sigPGP)
	if s != nil {
		hs, err := s.sign(f.header)
		if err != nil {
			return nil, err
		}
		ps, err := s.sign(all)
		if err != nil {
			return nil, err
		}
		f.sigs[sigRSA] = entry{typeBin, uint32(len(hs)), hs}
		f.sigs[sigPGP] = entry{typeBin, uint32(len(ps)), ps}
	}
	return f.bytes(), nil
}
