// Package relay forwards WireGuard's encrypted datagrams between two nodes
// that cannot reach each other directly, without decrypting them: any node
// with a public endpoint is a relay, on WireGuard's own port, and sees only
// ciphertext.
//
// Each end sets the other's endpoint to the relay. The relay routes:
//
//   - a handshake initiation by its mac1, which is keyed by the public key
//     of the node it is for: the relay knows every public key in the
//     cluster file and tries each (one keyed BLAKE2s per node);
//   - a handshake response, a cookie reply and every transport packet by
//     the receiver index in its header, learned from the handshake
//     messages it forwarded: an initiation's sender index routes back to
//     the initiator, a response's to the responder;
//   - a probe message (package probe) by the receiver key in its header.
//
// What it keeps is the index table, bounded (maxEntries, maxPerSource)
// and expiring with WireGuard's session lifetime. It forwards only between
// the cluster's nodes (a handshake or probe only from an address a node is
// seen at, to a node's address; the rest only from the counterpart the
// handshake named), never amplifies (one datagram out per datagram in, the
// same bytes), never delivers to the relay host itself, and limits the
// handshakes and probes one source may send.
package relay

import (
	"net/netip"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/probe"
	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Bounds of the index table.
const (
	// sessionLife is how long an index routes after the handshake that
	// made it: WireGuard's REJECT_AFTER_TIME (180 s) and some slack; the
	// ends make a new handshake by 120 s.
	sessionLife = 190 * time.Second
	// pendingLife is how long an initiation's index waits for its response.
	pendingLife = 10 * time.Second
	maxEntries  = 16384
	// maxPerSource bounds the entries the handshakes from one address make.
	maxPerSource = 512
	// Handshakes and probes one source may send: handshakeBurst at once,
	// then handshakeRate a second.
	handshakeBurst = 64
	handshakeRate  = 16
)

// Action is what to do with a datagram.
type Action int

const (
	// Local: for this node's own WireGuard (or nobody's: it drops it).
	Local Action = iota
	// Forward to Decision.To.
	Forward
	// Drop: a relayed datagram over a limit.
	Drop
)

// Decision is the router's answer for one datagram.
type Decision struct {
	Action Action
	To     netip.AddrPort
}

// Node is one node of the cluster file, where this relay sees it.
type Node struct {
	Key      wgtypes.Key
	Endpoint netip.AddrPort
}

type node struct {
	key      wgtypes.Key
	mac1     [blake2s.Size]byte
	endpoint netip.AddrPort
}

// entry routes a receiver index: packets for it come from from and go to.
// src is the source whose handshake made it, whose share it counts in.
type entry struct {
	to, from, src netip.AddrPort
	expires       time.Time
}

// Stats are the relay's counters.
type Stats struct {
	Packets, Bytes uint64 // forwarded
	Dropped        uint64 // over a limit
	Entries        int    // in the index table
}

// Router decides, datagram by datagram, what this node's UDP port does
// with what it receives. It is safe for concurrent use.
type Router struct {
	now func() time.Time

	mu       sync.Mutex
	self     node
	nodes    []node
	known    map[netip.AddrPort]bool // every node's endpoint
	local    map[netip.Addr]bool     // this host's own addresses: never a destination
	index    map[uint32]*entry
	perSrc   map[netip.AddrPort]int
	buckets  map[netip.AddrPort]*bucket
	stats    Stats
	disabled bool
}

// New returns a router for the node with public key self.
func New(self wgtypes.Key, now func() time.Time) *Router {
	if now == nil {
		now = time.Now
	}
	return &Router{now: now, self: node{key: self, mac1: mac1Key(self)}, known: map[netip.AddrPort]bool{},
		local: map[netip.Addr]bool{}, index: map[uint32]*entry{}, perSrc: map[netip.AddrPort]int{}, buckets: map[netip.AddrPort]*bucket{}}
}

// SetNodes gives the router the cluster's other nodes and where this node
// sees each (its WireGuard peers' endpoints), and this host's own
// addresses.
func (r *Router) SetNodes(nodes []Node, local []netip.Addr) {
	ns := make([]node, 0, len(nodes))
	known := make(map[netip.AddrPort]bool, len(nodes))
	for _, n := range nodes {
		if n.Key == r.self.key {
			continue
		}
		ns = append(ns, node{key: n.Key, mac1: mac1Key(n.Key), endpoint: n.Endpoint})
		if n.Endpoint.IsValid() {
			known[n.Endpoint] = true
		}
	}
	loc := make(map[netip.Addr]bool, len(local))
	for _, a := range local {
		loc[a.Unmap()] = true
	}
	r.mu.Lock()
	r.nodes, r.known, r.local = ns, known, loc
	r.mu.Unlock()
}

// Self is this node's key.
func (r *Router) Self() wgtypes.Key {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.self.key
}

// SetSelf changes this node's key (a key change).
func (r *Router) SetSelf(self wgtypes.Key) {
	r.mu.Lock()
	r.self = node{key: self, mac1: mac1Key(self)}
	r.mu.Unlock()
}

// Stats returns the counters.
func (r *Router) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stats
	st.Entries = len(r.index)
	return st
}

// Route decides what to do with pkt, which arrived from src.
func (r *Router) Route(pkt []byte, src netip.AddrPort) Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.route(pkt, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
}

// RouteBatch decides for a batch from one receive (the lock taken once):
// out[i] for pkts[i] from srcs[i]; a nil pkts[i] is skipped.
func (r *Router) RouteBatch(pkts [][]byte, srcs []netip.AddrPort, out []Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, pkt := range pkts {
		if pkt == nil {
			out[i] = Decision{}
			continue
		}
		out[i] = r.route(pkt, srcs[i])
	}
}

// route is Route with r.mu held.
func (r *Router) route(pkt []byte, src netip.AddrPort) Decision {
	var d Decision
	switch t := messageType(pkt); {
	case t == typeTransport && len(pkt) >= minSizeTransport:
		d = r.byIndex(u32(pkt, 4), src)
	case t == typeInitiation && len(pkt) == sizeInitiation:
		d = r.initiation(pkt, src)
	case t == typeResponse && len(pkt) == sizeResponse:
		d = r.response(pkt, src)
	case t == typeCookie && len(pkt) == sizeCookie:
		d = r.byIndex(u32(pkt, 4), src)
	case probe.IsProbe(pkt):
		d = r.probe(pkt, src)
	}
	if d.Action == Forward {
		if r.local[d.To.Addr()] || !d.To.Addr().IsGlobalUnicast() {
			return Decision{Action: Drop} // never to this host, never to what is no node
		}
		r.stats.Packets++
		r.stats.Bytes += uint64(len(pkt))
	}
	if d.Action == Drop {
		r.stats.Dropped++
	}
	return d
}

// initiation forwards a handshake initiation to the node its mac1 names.
func (r *Router) initiation(pkt []byte, src netip.AddrPort) Decision {
	if mac1Valid(&r.self.mac1, pkt, mac1Initiation) {
		return Decision{}
	}
	for i := range r.nodes {
		n := &r.nodes[i]
		if !mac1Valid(&n.mac1, pkt, mac1Initiation) {
			continue
		}
		if !n.endpoint.IsValid() || n.endpoint == src || !r.known[src] {
			return Decision{Action: Drop}
		}
		if !r.allow(src) || !r.remember(u32(pkt, 4), &entry{to: src, from: n.endpoint, expires: r.now().Add(pendingLife)}, src) {
			return Decision{Action: Drop}
		}
		return Decision{Action: Forward, To: n.endpoint}
	}
	return Decision{}
}

// response forwards a handshake response back to its initiator, found by
// its receiver index, and learns the responder's index.
func (r *Router) response(pkt []byte, src netip.AddrPort) Decision {
	if mac1Valid(&r.self.mac1, pkt, mac1Response) {
		return Decision{}
	}
	e := r.index[u32(pkt, 8)]
	if e == nil || e.from != src || r.now().After(e.expires) {
		return Decision{}
	}
	if !r.allow(src) {
		return Decision{Action: Drop}
	}
	life := r.now().Add(sessionLife)
	e.expires = life
	if !r.remember(u32(pkt, 4), &entry{to: src, from: e.to, expires: life}, src) {
		return Decision{Action: Drop}
	}
	return Decision{Action: Forward, To: e.to}
}

// byIndex forwards a transport packet or cookie reply by its receiver
// index, when it comes from the counterpart the handshake named.
func (r *Router) byIndex(idx uint32, src netip.AddrPort) Decision {
	e := r.index[idx]
	if e == nil || e.from != src || r.now().After(e.expires) {
		return Decision{}
	}
	return Decision{Action: Forward, To: e.to}
}

// probe forwards a probe message to the node it names.
func (r *Router) probe(pkt []byte, src netip.AddrPort) Decision {
	to, _ := probe.Destination(pkt)
	if to == r.self.key {
		return Decision{}
	}
	for i := range r.nodes {
		if n := &r.nodes[i]; n.key == to {
			if !n.endpoint.IsValid() || n.endpoint == src || !r.known[src] || !r.allow(src) {
				return Decision{Action: Drop}
			}
			return Decision{Action: Forward, To: n.endpoint}
		}
	}
	return Decision{Action: Drop}
}

// remember records an index, within the table's bounds: expired entries
// go first; a source over its share, or a full table, records nothing.
func (r *Router) remember(idx uint32, e *entry, src netip.AddrPort) bool {
	if old := r.index[idx]; old != nil {
		r.forget(idx, old)
	}
	if len(r.index) >= maxEntries || r.perSrc[src] >= maxPerSource {
		r.expire()
	}
	if len(r.index) >= maxEntries || r.perSrc[src] >= maxPerSource {
		return false
	}
	e.src = src
	r.index[idx] = e
	r.perSrc[src]++
	return true
}

func (r *Router) forget(idx uint32, e *entry) {
	delete(r.index, idx)
	if r.perSrc[e.src]--; r.perSrc[e.src] <= 0 {
		delete(r.perSrc, e.src)
	}
}

// expire drops the entries whose time is up.
func (r *Router) expire() {
	now := r.now()
	for idx, e := range r.index {
		if now.After(e.expires) {
			r.forget(idx, e)
		}
	}
	for src, b := range r.buckets {
		if now.Sub(b.at) > time.Minute {
			delete(r.buckets, src)
		}
	}
}

// bucket limits what one source sends: a token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

func (r *Router) allow(src netip.AddrPort) bool {
	now := r.now()
	b := r.buckets[src]
	if b == nil {
		if len(r.buckets) >= maxEntries {
			r.expire()
		}
		b = &bucket{tokens: handshakeBurst, at: now}
		r.buckets[src] = b
	}
	b.tokens = min(handshakeBurst, b.tokens+now.Sub(b.at).Seconds()*handshakeRate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
