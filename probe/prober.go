package probe

import (
	"crypto/rand"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Pong is an answer to one of this node's pings.
type Pong struct {
	// Peer answered the ping sent to At (its own address, or a relay's
	// that forwarded it).
	Peer wgtypes.Key
	At   netip.AddrPort
	RTT  time.Duration
	// Observed is where the ping came from as the peer saw it: this
	// node's address towards it (its public mapping behind a NAT).
	Observed netip.AddrPort
}

// Prober sends this node's pings and answers the others', on WireGuard's
// UDP port (Send). It is safe for concurrent use.
type Prober struct {
	send func(pkt []byte, to netip.AddrPort) error
	log  *slog.Logger
	now  func() time.Time
	// OnPong and OnCandidates, set before use, are called (not under a
	// lock) with each authentic pong and with the addresses a peer says
	// it can be reached at.
	OnPong       func(Pong)
	OnCandidates func(peer wgtypes.Key, addrs []netip.AddrPort)

	mu         sync.Mutex
	private    wgtypes.Key
	self       wgtypes.Key
	keys       map[wgtypes.Key][32]byte // pair keys, by peer
	peers      map[wgtypes.Key]bool     // the cluster's other nodes
	pending    map[[12]byte]ping
	candidates []netip.AddrPort
	pongs      map[netip.AddrPort]*tokens // answered per source, bounded
}

type ping struct {
	to   wgtypes.Key
	at   netip.AddrPort
	sent time.Time
}

// pendingLife is how long a ping waits for its pong.
const pendingLife = 5 * time.Second

// NewProber returns a prober for this node's private key, sending with send.
func NewProber(private wgtypes.Key, send func([]byte, netip.AddrPort) error, log *slog.Logger) *Prober {
	p := &Prober{send: send, log: log, now: time.Now, keys: map[wgtypes.Key][32]byte{}, peers: map[wgtypes.Key]bool{},
		pending: map[[12]byte]ping{}, pongs: map[netip.AddrPort]*tokens{}}
	p.SetKey(private)
	return p
}

// SetKey changes this node's private key (a key change).
func (p *Prober) SetKey(private wgtypes.Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if private == p.private {
		return
	}
	p.private, p.self, p.keys = private, private.PublicKey(), map[wgtypes.Key][32]byte{}
}

// SetPeers gives the cluster's other nodes: only they are answered.
func (p *Prober) SetPeers(keys []wgtypes.Key) {
	m := make(map[wgtypes.Key]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	p.mu.Lock()
	p.peers = m
	p.mu.Unlock()
}

// SetCandidates gives the addresses this node's pings say it can be
// reached at (its own networks' addresses and WireGuard's port).
func (p *Prober) SetCandidates(addrs []netip.AddrPort) {
	p.mu.Lock()
	p.candidates = append([]netip.AddrPort(nil), addrs...)
	p.mu.Unlock()
}

// pairKey returns the key of this node and peer; the caller holds p.mu.
func (p *Prober) pairKey(peer wgtypes.Key) (*[32]byte, bool) {
	if k, ok := p.keys[peer]; ok {
		return &k, true
	}
	k, err := PairKey(p.private, peer)
	if err != nil {
		return nil, false
	}
	p.keys[peer] = k
	return &k, true
}

// Ping sends a ping to peer at at (its address, or a relay's that
// forwards it to the peer); its pong comes to OnPong.
func (p *Prober) Ping(peer wgtypes.Key, at netip.AddrPort) error {
	p.mu.Lock()
	key, ok := p.pairKey(peer)
	if !ok {
		p.mu.Unlock()
		return ErrBadMessage
	}
	m := Message{Type: TypePing, From: p.self, To: peer, Addrs: p.candidates}
	rand.Read(m.TxID[:])
	now := p.now()
	for id, q := range p.pending {
		if now.Sub(q.sent) > pendingLife {
			delete(p.pending, id)
		}
	}
	if len(p.pending) < 4096 {
		p.pending[m.TxID] = ping{to: peer, at: at, sent: now}
	}
	pkt := m.Encode(nil, key)
	p.mu.Unlock()
	return p.send(pkt, at)
}

// Receive handles a probe message for this node that came from src: a
// ping is answered (a pong back to src), a pong reported, candidates
// passed on.
func (p *Prober) Receive(pkt []byte, src netip.AddrPort) {
	m, key, ok := p.authentic(pkt)
	if !ok {
		return
	}
	switch m.Type {
	case TypePing:
		if p.mayAnswer(src) {
			reply := Message{Type: TypePong, From: m.To, To: m.From, TxID: m.TxID, Addrs: []netip.AddrPort{src}}
			p.send(reply.Encode(nil, &key), src)
		}
	case TypePong:
		if q, ok := p.matched(m); ok && p.OnPong != nil {
			var observed netip.AddrPort
			if len(m.Addrs) > 0 {
				observed = m.Addrs[0]
			}
			p.OnPong(Pong{Peer: m.From, At: q.at, RTT: p.now().Sub(q.sent), Observed: observed})
		}
		return
	}
	if len(m.Addrs) > 0 && p.OnCandidates != nil {
		p.OnCandidates(m.From, m.Addrs)
	}
}

// authentic decodes pkt if it is an authentic message from a node of the
// cluster to this node.
func (p *Prober) authentic(pkt []byte) (Message, [32]byte, bool) {
	from, ok := Sender(pkt)
	if !ok {
		return Message{}, [32]byte{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key, ok := p.pairKey(from)
	if !ok || !p.peers[from] {
		return Message{}, [32]byte{}, false
	}
	m, err := Decode(pkt, key)
	if err != nil || m.To != p.self {
		return Message{}, [32]byte{}, false
	}
	return m, *key, true
}

// mayAnswer bounds the pongs a second one source gets.
func (p *Prober) mayAnswer(src netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	b := p.pongs[src]
	if b == nil {
		if len(p.pongs) > 4096 {
			p.pongs = map[netip.AddrPort]*tokens{}
		}
		b = &tokens{n: 20, at: now}
		p.pongs[src] = b
	}
	return b.take(now, 20, 10)
}

// matched is the ping a pong answers, once.
func (p *Prober) matched(m Message) (ping, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q, ok := p.pending[m.TxID]
	if !ok || q.to != m.From {
		return ping{}, false
	}
	delete(p.pending, m.TxID)
	return q, true
}

// tokens is a small token bucket.
type tokens struct {
	n  float64
	at time.Time
}

func (b *tokens) take(now time.Time, burst, rate float64) bool {
	b.n = min(burst, b.n+now.Sub(b.at).Seconds()*rate)
	b.at = now
	if b.n < 1 {
		return false
	}
	b.n--
	return true
}
