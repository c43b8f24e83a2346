package appliance

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/meshsync"
	"github.com/wgk3s/wgk3s/paths"
	"github.com/wgk3s/wgk3s/status"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// reportWait bounds how long the status waits for a fresh report: a busy
// node (a long reload on a loaded host) answers with its last one.
const reportWait = 800 * time.Millisecond

// Report is the status snapshot, from the live device and child. When
// making it takes longer than reportWait, it is the last one made (its
// Taken says when); the fresh one replaces it when done.
func (a *App) Report() status.Report {
	ch := make(chan status.Report, 1)
	go func() {
		r := a.report()
		a.mu.Lock()
		a.last = r
		a.mu.Unlock()
		ch <- r
	}()
	timer := time.NewTimer(reportWait)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r
	case <-timer.C:
	}
	a.mu.Lock()
	last, reloads := a.last, a.reloads
	a.mu.Unlock()
	if last.Taken.IsZero() {
		return <-ch // none made yet
	}
	last.Reloads = reloads // cheap, and what a busy node is busy with
	last.PeersUnavailable = "the node is busy (a reload?); peers, paths and k3s as of " + last.Taken.Format(time.RFC3339)
	return last
}

// report makes a fresh status snapshot.
func (a *App) report() status.Report {
	a.mu.Lock()
	p, reloads := a.plan, a.reloads
	a.mu.Unlock()
	cfg, egress := p.Config, p.Egress
	cl, self := cfg.Cluster, cfg.Self
	now := time.Now()
	r := status.Report{
		Node: self.Name, Role: string(self.Role), Version: a.opts.Version, Started: a.started, Config: a.opts.ConfigPath, Taken: now,
		Mode: string(a.tun.Choice().Mode), ModeReason: a.tun.Choice().Reason,
		Interface: cl.Interface.Name, Address: netip.PrefixFrom(self.Address, cl.Network.Bits()).String(),
		ListenPort: cl.Interface.ListenPort, PublicKey: self.PublicKey.String(),
		Firewall: status.Firewall{Backend: a.fw.Backend(), Egress: egress},
		Reloads:  reloads, Recreations: a.tun.Recreations(),
	}
	switch {
	case a.syncClient != nil:
		st := a.syncClient.Status()
		r.Sync = &st
		if a.syncServer != nil { // a server: it follows, and serves what it took
			ss := a.syncServer.Stats()
			r.Sync.Role, r.Sync.Nodes, r.Sync.Served, r.Sync.Denied = "following and serving", ss.Nodes, ss.Served, ss.Denied
		}
	case a.syncServer != nil:
		st := a.syncServer.Stats()
		r.Sync = &status.Sync{Role: "serving", Master: p.Sync.Master.String(), Revision: meshsync.Revision(cl.Data), Nodes: st.Nodes,
			Served: st.Served, Denied: st.Denied}
	}
	names := map[wgtypes.Key]string{}
	for _, n := range cfg.Peers() {
		names[n.PublicKey] = n.Name
	}
	switch dev, err := a.device(); {
	case errors.Is(err, errDeviceBusy):
		r.PeersUnavailable = "the WireGuard device is busy applying a reload; ask again in a moment"
	case err != nil:
		r.PeersUnavailable = "cannot read the WireGuard device: " + err.Error()
		a.log.Warn("status: cannot read the WireGuard device", "err", err)
	default:
		for _, p := range dev.Peers {
			r.Peers = append(r.Peers, peerStatus(p, names[p.PublicKey], now))
		}
		a.addPaths(r.Peers, dev.Peers, cl.Interface.PersistentKeepalive, now)
	}
	if mesh := a.tun.Mesh(); mesh != nil {
		st := mesh.Router.Stats()
		r.Relay = &status.Relay{Packets: st.Packets, Bytes: st.Bytes, Dropped: st.Dropped, Entries: st.Entries}
	}
	a.mu.Lock()
	r.Health = a.health
	a.mu.Unlock()
	if a.snaps != nil {
		r.Snapshots = a.snaps.status()
	}
	k := a.k3s.Status()
	r.K3s = status.K3s{Binary: k.Binary, Args: k.Args, Running: k.Running, PID: k.PID, Restarts: k.Restarts, LastExit: k.LastExit}
	if k.Running {
		r.K3s.UptimeSeconds = now.Sub(k.Started).Seconds()
	} else if !k.NextStart.IsZero() {
		r.K3s.RestartInSeconds = max(k.NextStart.Sub(now).Seconds(), 0.001)
	}
	return r
}

// deviceWait bounds how long the report waits for the device: a reload of
// a big file holds it (a 5000-node set took seconds), and the status must
// answer meanwhile.
const deviceWait = time.Second

var errDeviceBusy = errors.New("the WireGuard device did not answer in time")

// device reads the live device, or gives up after deviceWait (the read
// finishes in the background).
func (a *App) device() (*wgtypes.Device, error) {
	type result struct {
		d   *wgtypes.Device
		err error
	}
	ch := make(chan result, 1)
	go func() { d, err := a.tun.Device(); ch <- result{d, err} }()
	select {
	case r := <-ch:
		return r.d, r.err
	case <-time.After(deviceWait):
		return nil, errDeviceBusy
	}
}

func peerStatus(p wgtypes.Peer, name string, now time.Time) status.Peer {
	if name == "" {
		name = fmt.Sprintf("(unknown %s)", p.PublicKey.String()[:8])
	}
	ps := status.Peer{Name: name, PublicKey: p.PublicKey.String(), HandshakeAgeSeconds: -1,
		ReceiveBytes: p.ReceiveBytes, TransmitBytes: p.TransmitBytes}
	if p.Endpoint != nil {
		ps.Endpoint = p.Endpoint.String()
	}
	for _, ip := range p.AllowedIPs {
		ps.AllowedIPs = append(ps.AllowedIPs, ip.String())
	}
	if !p.LastHandshakeTime.IsZero() {
		ps.LatestHandshake = p.LastHandshakeTime
		ps.HandshakeAgeSeconds = now.Sub(p.LastHandshakeTime).Seconds()
	}
	return ps
}

// StatusLine is the one-line STATUS= for systemd.
func (a *App) StatusLine() string {
	p := a.Plan()
	return fmt.Sprintf("%s %s up (%s), %d peers, k3s %s supervised", p.Tunnel.Name,
		p.Config.Self.Address, a.tun.Choice().Mode, len(p.Tunnel.Peers), p.K3s.Role())
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// addPaths says for each peer how it is reached, and whether it is
// reachable: something came back from it recently, over whatever path (a
// peer that is down is not reachable because its relay is).
func (a *App) addPaths(ps []status.Peer, dev []wgtypes.Peer, keepalive time.Duration, now time.Time) {
	var st map[wgtypes.Key]paths.Status
	if a.paths != nil {
		st = a.paths.Status()
	}
	for i := range ps {
		path := st[dev[i].PublicKey]
		ps[i].Path = "direct"
		if path.Learned.IsValid() {
			ps[i].LearnedEndpoint = path.Learned.String()
		}
		if path.Relayed {
			ps[i].Path, ps[i].Via = "relayed", path.Via
		}
		ps[i].RTTMillis = float64(path.RTT.Microseconds()) / 1000
		heard := path.Heard // tracked between the paths' ticks; a handshake since counts too
		if hs := dev[i].LastHandshakeTime; hs.After(heard) {
			heard = hs
		}
		ps[i].Reachable = paths.Reachable(heard, now, keepalive)
	}
}
