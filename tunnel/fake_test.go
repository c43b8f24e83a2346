package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// fakeHost is an in-memory kernel: links with MTU, state and addresses.
type fakeHost struct {
	mu         sync.Mutex
	holes      map[netip.Prefix]bool
	deleted    chan struct{} // watchLinks' events
	links      map[string]*fakeLink
	nextIndex  int
	kernelErr  error            // createKernelLink fails with this
	fail       map[string]error // method name -> injected error, returned once
	userClosed int
}

type fakeLink struct {
	kind  string // "wireguard", "tuntap", "veth", ...
	index int
	mtu   int
	up    bool
	addrs []netip.Prefix
}

func newFakeHost() *fakeHost {
	return &fakeHost{links: map[string]*fakeLink{}, fail: map[string]error{}, holes: map[netip.Prefix]bool{},
		deleted: make(chan struct{}, 1)}
}

// check returns an injected failure for op once: a transient error, so
// that the rollback after it can succeed.
func (h *fakeHost) check(op string) error {
	err := h.fail[op]
	delete(h.fail, op)
	return err
}

func (h *fakeHost) link(name string) (*fakeLink, error) {
	l, ok := h.links[name]
	if !ok {
		return nil, fmt.Errorf("link %s: %w", name, os.ErrNotExist)
	}
	return l, nil
}

func (h *fakeHost) linkInfo(name string) (linkInfo, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.links[name]
	if !ok {
		return linkInfo{}, false, h.check("linkInfo")
	}
	return linkInfo{Kind: l.kind, Index: l.index}, true, h.check("linkInfo")
}

func (h *fakeHost) newIndex() int {
	h.nextIndex++
	return 100 + h.nextIndex
}

func (h *fakeHost) deleteLink(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check("deleteLink"); err != nil {
		return err
	}
	delete(h.links, name)
	return nil
}

func (h *fakeHost) createKernelLink(name string, mtu int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kernelErr != nil {
		return h.kernelErr
	}
	if _, ok := h.links[name]; ok {
		return errors.New("file exists")
	}
	h.links[name] = &fakeLink{kind: KindWireGuard, index: h.newIndex(), mtu: mtu}
	return nil
}

type fakeUser struct {
	h    *fakeHost
	name string
}

func (u fakeUser) Close() error {
	u.h.mu.Lock()
	defer u.h.mu.Unlock()
	u.h.userClosed++
	delete(u.h.links, u.name)
	return nil
}

func (h *fakeHost) createUserspace(cfg Config, _ *slog.Logger, _ *Mesh) (io.Closer, error) {
	name, mtu := cfg.Name, cfg.MTU
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check("createUserspace"); err != nil {
		return nil, err
	}
	h.links[name] = &fakeLink{kind: KindTUN, index: h.newIndex(), mtu: mtu}
	return fakeUser{h, name}, nil
}

func (h *fakeHost) setMTU(name string, mtu int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.link(name)
	if err != nil {
		return err
	}
	if err := h.check("setMTU"); err != nil {
		return err
	}
	l.mtu = mtu
	return nil
}

func (h *fakeHost) setUp(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.link(name)
	if err != nil {
		return err
	}
	if err := h.check("setUp"); err != nil {
		return err
	}
	l.up = true
	return nil
}

func (h *fakeHost) replaceAddress(name string, p netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.link(name)
	if err != nil {
		return err
	}
	if err := h.check("replaceAddress"); err != nil {
		return err
	}
	for i, a := range l.addrs {
		if a.Addr() == p.Addr() {
			l.addrs[i] = p
			return nil
		}
	}
	l.addrs = append(l.addrs, p)
	return nil
}

func (h *fakeHost) deleteAddress(name string, p netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, err := h.link(name)
	if err != nil {
		return err
	}
	if err := h.check("deleteAddress"); err != nil {
		return err
	}
	for i, a := range l.addrs {
		if a == p {
			l.addrs = append(l.addrs[:i], l.addrs[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("address %s: %w", p, os.ErrNotExist)
}

// fakeWG is an in-memory WireGuard device with wgctrl's configuration
// semantics, recording every ConfigureDevice call.
type fakeWG struct {
	mu     sync.Mutex
	h      *fakeHost
	dev    wgtypes.Device
	calls  []wgtypes.Config
	failOn int // fail the n-th call (1-based) after applying half of it; 0 = never
	closed bool
}

func (w *fakeWG) Device(name string) (*wgtypes.Device, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, _, err := w.h.linkInfo(name); err != nil || w.h.links[name] == nil {
		return nil, os.ErrNotExist
	}
	d := w.dev
	d.Name = name
	d.Peers = append([]wgtypes.Peer(nil), w.dev.Peers...)
	return &d, nil
}

func (w *fakeWG) ConfigureDevice(name string, c wgtypes.Config) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.h.links[name] == nil {
		return os.ErrNotExist
	}
	w.calls = append(w.calls, c)
	peers := c.Peers
	var injected error
	if w.failOn == len(w.calls) {
		// Like a UAPI set that stops at a bad line: the first half applies.
		peers, injected = peers[:len(peers)/2], errors.New("injected configure failure")
	}
	if c.PrivateKey != nil {
		w.dev.PrivateKey = *c.PrivateKey
		w.dev.PublicKey = c.PrivateKey.PublicKey()
	}
	if c.ListenPort != nil {
		w.dev.ListenPort = *c.ListenPort
	}
	if c.ReplacePeers {
		w.dev.Peers = nil
	}
	for _, pc := range peers {
		i := w.find(pc.PublicKey)
		switch {
		case pc.Remove:
			if i >= 0 {
				w.dev.Peers = append(w.dev.Peers[:i], w.dev.Peers[i+1:]...)
			}
			continue
		case i < 0 && pc.UpdateOnly:
			continue
		case i < 0:
			w.dev.Peers = append(w.dev.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(w.dev.Peers) - 1
		}
		p := &w.dev.Peers[i]
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		// An allowed IP belongs to one peer: adding it moves it.
		for j := range w.dev.Peers {
			if j != i {
				w.dev.Peers[j].AllowedIPs = slices.DeleteFunc(w.dev.Peers[j].AllowedIPs, func(n net.IPNet) bool {
					return slices.ContainsFunc(pc.AllowedIPs, func(m net.IPNet) bool { return m.String() == n.String() })
				})
			}
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
	}
	return injected
}

func (w *fakeWG) find(k wgtypes.Key) int {
	for i, p := range w.dev.Peers {
		if p.PublicKey == k {
			return i
		}
	}
	return -1
}

func (w *fakeWG) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

// setHandshake pretends the peer completed a handshake at t.
func (w *fakeWG) setHandshake(k wgtypes.Key, at func(p *wgtypes.Peer)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i := w.find(k); i >= 0 {
		at(&w.dev.Peers[i])
	}
}

// summary renders the device's peers for comparisons.
func (w *fakeWG) summary() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for _, p := range w.dev.Peers {
		var ips []string
		for _, n := range p.AllowedIPs {
			ips = append(ips, n.String())
		}
		ep := "-"
		if p.Endpoint != nil {
			ep = p.Endpoint.String()
		}
		out[p.PublicKey.String()[:8]] = fmt.Sprintf("%s %v %s", ep, ips, p.PersistentKeepaliveInterval)
	}
	return out
}

func (h *fakeHost) addressOwners(addr netip.Addr) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for name, l := range h.links {
		for _, p := range l.addrs {
			if p.Addr() == addr {
				out = append(out, name)
			}
		}
	}
	return out, nil
}

func (h *fakeHost) replaceBlackhole(p netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check("replaceBlackhole"); err != nil {
		return err
	}
	h.holes[p] = true
	return nil
}

func (h *fakeHost) deleteBlackhole(p netip.Prefix) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.holes, p)
	return nil
}

func (h *fakeHost) blackholes() ([]netip.Prefix, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []netip.Prefix
	for p := range h.holes {
		out = append(out, p)
	}
	return out, nil
}

func (h *fakeHost) watchLinks(done <-chan struct{}) (<-chan struct{}, error) { return h.deleted, nil }

// deleteBehindTheTunnelsBack deletes a link as `ip link del` would, and
// tells the watcher.
func (h *fakeHost) deleteBehindTheTunnelsBack(name string) {
	h.mu.Lock()
	delete(h.links, name)
	h.mu.Unlock()
	h.deleted <- struct{}{}
}
