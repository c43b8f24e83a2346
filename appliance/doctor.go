package appliance

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/wgk3s/wgk3s/doctor"
	"github.com/wgk3s/wgk3s/paths"
	"github.com/wgk3s/wgk3s/probe"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// doctorWait bounds each of doctor's questions (the master's view, a
// probe, a DNS lookup, k3s): they run at once, so doctor answers within
// about this long (the bound is 10 s).
const doctorWait = 3 * time.Second

// Doctor looks at this node and its peers and says what is wrong, and
// what to do (`appliance doctor`).
func (a *App) Doctor(ctx context.Context) doctor.Report { return a.diagnose(ctx, true) }

// diagnose runs the checks; asked (by `appliance doctor`) it also asks
// k3s whether this node is Ready, which runs `k3s kubectl`, too heavy for
// every minute.
func (a *App) diagnose(ctx context.Context, asked bool) doctor.Report {
	ctx, cancel := context.WithTimeout(ctx, 2*doctorWait)
	defer cancel()
	r := doctor.Diagnose(a.facts(ctx, asked))
	a.mu.Lock()
	a.health = &r
	a.mu.Unlock()
	return r
}

// doctorPeriod is how often doctor runs by itself, for status's health
// and the metrics.
const doctorPeriod = time.Minute

// doctorEvery runs doctor every doctorPeriod until ctx is cancelled.
func (a *App) doctorEvery(ctx context.Context) error {
	t := time.NewTicker(doctorPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if r := a.diagnose(ctx, false); !r.Healthy() {
				a.log.Warn("doctor found problems (appliance doctor says what to do)", "problems", r.Problems())
			}
		}
	}
}

// facts gathers what the checks look at, the slow parts at once.
func (a *App) facts(ctx context.Context, asked bool) doctor.Facts {
	p := a.Plan()
	cfg := p.Config
	cl := cfg.Cluster
	f := doctor.Facts{Now: time.Now(), Node: cfg.Self.Name, Role: string(cfg.Self.Role), Master: cl.Master().Name,
		Keepalive: cl.Interface.PersistentKeepalive, ListenPort: cl.Interface.ListenPort, Interface: cl.Interface.Name, MTU: cl.Interface.MTU,
		HasEndpoint: cfg.Self.Endpoint.Host != ""}
	f.Peers = a.doctorPeers(p)
	var mu sync.Mutex
	var wg sync.WaitGroup
	gather := func(fn func()) { wg.Add(1); go func() { defer wg.Done(); fn() }() }
	gather(func() { v := a.masterView(ctx); mu.Lock(); f.MasterView = v; mu.Unlock() })
	gather(func() { m := a.probeMTU(ctx, p); mu.Lock(); f.MTUProbe = m; mu.Unlock() })
	gather(func() { m := a.mappings(ctx, p); mu.Lock(); f.Mappings = m; mu.Unlock() })
	gather(func() { u := unresolved(ctx, p); mu.Lock(); f.Unresolved = u; mu.Unlock() })
	gather(func() {
		ready, log := a.k3sReady(ctx, p, asked)
		mu.Lock()
		f.K3sReady, f.K3sLog = ready, log
		mu.Unlock()
	})
	f.FirewallDrops = a.fw.Drops(cl.Interface.ListenPort, cl.Interface.Name)
	f.RPFilter, f.RPFilterDrops = rpFilter(cl.Interface.Name)
	f.Certs = k3sCerts(p.K3s.Args)
	if c := a.syncClient; c != nil {
		f.ClockOffset, f.HasClock = c.ClockOffset()
	}
	wg.Wait()
	if f.MasterView != nil && f.MasterView.Node == f.Node {
		f.MasterView = nil
	}
	return f
}

// doctorPeers is each peer as WireGuard and the mesh see it now.
func (a *App) doctorPeers(p *Plan) []doctor.Peer {
	dev, err := a.device()
	if err != nil {
		return nil
	}
	nodes := map[wgtypes.Key]int{}
	peers := p.Config.Peers()
	for i, n := range peers {
		nodes[n.PublicKey] = i
	}
	var st map[wgtypes.Key]paths.Status
	if a.paths != nil {
		st = a.paths.Status()
	}
	mesh := a.tun.Mesh()
	configured := a.tun.Configured()
	var out []doctor.Peer
	for _, dp := range dev.Peers {
		i, ok := nodes[dp.PublicKey]
		if !ok {
			continue
		}
		n := peers[i]
		dpeer := doctor.Peer{Name: n.Name, Address: n.Address.String(), Handshake: dp.LastHandshakeTime, RX: dp.ReceiveBytes, TX: dp.TransmitBytes,
			Relayed: st[dp.PublicKey].Relayed, Via: st[dp.PublicKey].Via, Authentic: st[dp.PublicKey].Heard}
		if n.Endpoint.Host != "" {
			dpeer.Endpoint = n.Endpoint.String()
		}
		if dp.Endpoint != nil {
			dpeer.Addr = dp.Endpoint.AddrPort()
			dpeer.Addr = netip.AddrPortFrom(dpeer.Addr.Addr().Unmap(), dpeer.Addr.Port())
		}
		if mesh != nil {
			dpeer.HeardFromAddr, dpeer.HeardAt = heardFrom(mesh, dpeer, configured[dp.PublicKey])
		}
		out = append(out, dpeer)
	}
	return out
}

// heardFrom is when a datagram last came from the peer's own address:
// where the tunnel sends (unless that is a relay's) or the file's
// endpoint (a relayed peer still tries it).
func heardFrom(mesh *tunnel.Mesh, p doctor.Peer, configured netip.AddrPort) (time.Time, netip.AddrPort) {
	var heard time.Time
	at := p.Addr
	if !p.Relayed && p.Addr.IsValid() {
		_, heard = mesh.Activity(p.Addr)
	}
	if configured.IsValid() {
		if _, last := mesh.Activity(configured); last.After(heard) || p.Relayed {
			heard, at = last, configured
		}
	}
	return heard, at
}

// view is what GET /v1/view answers: this node's doctorPeers.
func (a *App) view() []byte {
	p := a.Plan()
	data, _ := json.Marshal(doctor.View{Node: p.Config.Self.Name, Peers: a.doctorPeers(p)})
	return data
}

// masterView asks the master for its view (nil on the master, or when
// it does not answer in time).
func (a *App) masterView(ctx context.Context) *doctor.View {
	c := a.syncClient
	if c == nil {
		return nil
	}
	data, err := c.View(ctx, doctorWait)
	if err != nil {
		a.log.Debug("doctor: the master's view", "err", err)
		return nil
	}
	var v doctor.View
	if json.Unmarshal(data, &v) != nil {
		return nil
	}
	return &v
}

// mtuSizes are the tunnel packet sizes tried: the interface's MTU, then
// 20 bytes less each time, down to 1280.
func mtuSizes(mtu int) []int {
	var sizes []int
	for s := mtu; s > 1280; s -= 20 {
		sizes = append(sizes, s)
	}
	return append(sizes, 1280)
}

// probeMTU finds, per peer that answers, the largest tunnel packet that
// crosses wg0 with don't-fragment set.
func (a *App) probeMTU(ctx context.Context, p *Plan) map[string]int {
	cfg := p.Config
	e, err := a.parts.Echoer(cfg.Cluster.Interface.Name, cfg.Self.Address)
	if err != nil {
		a.log.Warn("doctor: cannot probe the path MTU", "err", err)
		return nil
	}
	defer e.Close()
	var mu sync.Mutex
	out := map[string]int{}
	var wg sync.WaitGroup
	for _, n := range cfg.Peers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := e.LargestEcho(ctx, n.Address, mtuSizes(cfg.Cluster.Interface.MTU), 2, time.Second)
			mu.Lock()
			out[n.Name] = got
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// mappings pings each peer the file gives an endpoint at that endpoint,
// and keeps where each saw the ping come from: this node's public
// mapping per destination, which tells its NAT's kind.
func (a *App) mappings(ctx context.Context, p *Plan) map[string]netip.AddrPort {
	mesh := a.tun.Mesh()
	if mesh == nil || p.Config.Self.Endpoint.Host != "" {
		return nil
	}
	names := map[wgtypes.Key]string{}
	for _, n := range p.Config.Peers() {
		names[n.PublicKey] = n.Name
	}
	out := map[string]netip.AddrPort{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for key, at := range a.tun.Configured() {
		if names[key] == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if pong, ok := a.pong(ctx, mesh.Prober, key, at, time.Second); ok && pong.Observed.IsValid() {
				mu.Lock()
				out[names[key]] = pong.Observed
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// pong pings peer at addr (its own address, or a relay's) and waits for
// its answer.
func (a *App) pong(ctx context.Context, pr *probe.Prober, peer wgtypes.Key, at netip.AddrPort, timeout time.Duration) (probe.Pong, bool) {
	wait := a.pongs.expect(peer, at)
	defer a.pongs.forget(wait)
	for attempt := 0; attempt < 2; attempt++ {
		if err := pr.Ping(peer, at); err != nil {
			return probe.Pong{}, false
		}
		select {
		case pong := <-wait.ch:
			return pong, true
		case <-time.After(timeout / 2):
		case <-ctx.Done():
			return probe.Pong{}, false
		}
	}
	return probe.Pong{}, false
}

// pongWaiters hands the probes' answers to those waiting for them
// (doctor, appliance ping); package paths gets every one anyway.
type pongWaiters struct {
	mu      sync.Mutex
	waiting []*pongWait
}

type pongWait struct {
	peer wgtypes.Key
	at   netip.AddrPort
	ch   chan probe.Pong
}

func (w *pongWaiters) expect(peer wgtypes.Key, at netip.AddrPort) *pongWait {
	pw := &pongWait{peer: peer, at: at, ch: make(chan probe.Pong, 1)}
	w.mu.Lock()
	w.waiting = append(w.waiting, pw)
	w.mu.Unlock()
	return pw
}

func (w *pongWaiters) forget(pw *pongWait) {
	w.mu.Lock()
	w.waiting = slices.DeleteFunc(w.waiting, func(x *pongWait) bool { return x == pw })
	w.mu.Unlock()
}

func (w *pongWaiters) deliver(p probe.Pong) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pw := range w.waiting {
		if pw.peer == p.Peer && pw.at == p.At {
			select {
			case pw.ch <- p:
			default:
			}
		}
	}
}
