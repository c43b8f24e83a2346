package meshsync

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Every process, user and pod on a node sends from the node's mesh
// address, so an address cannot be what a connection is admitted by: a
// process without the node's key could hold all of an address's slots and
// keep the node's appliance out. Connections are admitted by what they
// prove instead:
//
//   - A new connection is unproven. Unproven connections are capped per
//     address and in all; when a cap is reached, the oldest unproven
//     connection is closed, never the new one. The cap in all grows with
//     the cluster (UnprovenPerNode for each node served, never below
//     unprovenFloor): when a master restarts, every node reconnects at
//     once, and a burst of one connection per node must not push out the
//     first of them before it has had the time to prove itself. The appliance sends its
//     request as soon as it connects, so its connection is unproven for a
//     round trip only, and another process would have to open
//     UnprovenPerAddr connections within that round trip to push it out.
//   - A connection that carried an authenticated request is the node's
//     (proven for its key) and is never closed for another's sake; each
//     key keeps at most ProvenPerKey of them (its oldest goes).
//   - A request that fails authentication is answered and its connection
//     closed (Connection: close), so it holds nothing.
const (
	UnprovenPerAddr = 32
	UnprovenPerNode = 4
	unprovenFloor   = 512
	ProvenPerKey    = 8
)

// admission tracks the server's connections: see the comment above.
type admission struct {
	perAddr, total, perKey int

	mu       sync.Mutex
	unproven []*admitted // oldest first
	proven   map[wgtypes.Key][]*admitted
}

func newAdmission() *admission {
	return &admission{perAddr: UnprovenPerAddr, total: unprovenFloor, perKey: ProvenPerKey, proven: map[wgtypes.Key][]*admitted{}}
}

// admitted is one accepted connection.
type admitted struct {
	net.Conn
	a      *admission
	addr   netip.Addr
	closed sync.Once
	// key is the key it proved (guarded by a.mu); zero while unproven.
	key wgtypes.Key
}

// listener admits every connection l accepts, pushing out the oldest
// unproven ones beyond the caps.
type listener struct {
	net.Listener
	a *admission
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ac := &admitted{Conn: c, a: l.a, addr: remoteAddr(c)}
	for _, old := range l.a.admit(ac) {
		old.Close()
	}
	return ac, nil
}

// admit adds c as unproven and returns the connections to close.
func (a *admission) admit(c *admitted) (evict []*admitted) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unproven = append(a.unproven, c)
	same := 0
	for i := len(a.unproven) - 1; i >= 0; i-- {
		if o := a.unproven[i]; o.addr == c.addr {
			if same++; same > a.perAddr {
				evict = append(evict, o)
			}
		}
	}
	if over := len(a.unproven) - len(evict) - a.total; over > 0 {
		for _, o := range a.unproven {
			if over == 0 {
				break
			}
			if !slices.Contains(evict, o) {
				evict, over = append(evict, o), over-1
			}
		}
	}
	a.unproven = slices.DeleteFunc(a.unproven, func(o *admitted) bool { return slices.Contains(evict, o) })
	return evict
}

// prove marks c as key's; it returns the connection of key to close when
// key holds more than perKey.
func (a *admission) prove(c *admitted, key wgtypes.Key) *admitted {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.key == key {
		return nil
	}
	a.unproven = slices.DeleteFunc(a.unproven, func(o *admitted) bool { return o == c })
	c.key = key
	list := append(a.proven[key], c)
	var evict *admitted
	if len(list) > a.perKey {
		evict, list = list[0], list[1:]
	}
	a.proven[key] = list
	return evict
}

// serving sizes the cap in all for a cluster of nodes.
func (a *admission) serving(nodes int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total = max(unprovenFloor, UnprovenPerNode*nodes)
}

func (a *admission) forget(c *admitted) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unproven = slices.DeleteFunc(a.unproven, func(o *admitted) bool { return o == c })
	if list := slices.DeleteFunc(a.proven[c.key], func(o *admitted) bool { return o == c }); len(list) > 0 {
		a.proven[c.key] = list
	} else {
		delete(a.proven, c.key)
	}
}

func (a *admission) counts() (unproven, proven int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.proven {
		proven += len(l)
	}
	return len(a.unproven), proven
}

func (c *admitted) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() { c.a.forget(c) })
	return err
}

// connKey finds a request's connection in its context.
type connKey struct{}

// withConn is the http.Server's ConnContext.
func withConn(ctx context.Context, c net.Conn) context.Context {
	if ac, ok := c.(*admitted); ok {
		return context.WithValue(ctx, connKey{}, ac)
	}
	return ctx
}

// proven marks the connection of an authenticated request as key's.
func proven(ctx context.Context, key wgtypes.Key) {
	if ac, ok := ctx.Value(connKey{}).(*admitted); ok {
		if evict := ac.a.prove(ac, key); evict != nil {
			evict.Close()
		}
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
