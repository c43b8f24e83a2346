package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/wgk3s/wgk3s/status"
	"github.com/wgk3s/wgk3s/supervisor"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// report builds the status snapshot from the live device and child.
func (a *app) report() status.Report {
	a.mu.Lock()
	cfg, egress, reloads := a.cfg, a.egress, a.reloads
	a.mu.Unlock()
	cl, self := cfg.Cluster, cfg.Self
	now := time.Now()
	r := status.Report{
		Node: self.Name, Role: string(self.Role), Version: version, Started: a.started,
		Mode: string(a.tun.Choice().Mode), ModeReason: a.tun.Choice().Reason,
		Interface: cl.Interface.Name, Address: netip.PrefixFrom(self.Address, cl.Network.Bits()).String(),
		ListenPort: cl.Interface.ListenPort, PublicKey: self.PublicKey.String(),
		Firewall: status.Firewall{Backend: a.fw.Backend(), Egress: egress},
		Reloads:  reloads,
	}
	names := map[wgtypes.Key]string{}
	for _, n := range cfg.Peers() {
		names[n.PublicKey] = n.Name
	}
	if dev, err := a.tun.Device(); err == nil {
		for _, p := range dev.Peers {
			r.Peers = append(r.Peers, peerStatus(p, names[p.PublicKey], now))
		}
	} else {
		a.log.Warn("status: cannot read the WireGuard device", "err", err)
	}
	k := a.k3s.Status()
	r.K3s = status.K3s{Binary: k.Binary, Args: k.Args, Running: k.Running, PID: k.PID, Restarts: k.Restarts, LastExit: k.LastExit}
	if k.Running {
		r.K3s.UptimeSeconds = now.Sub(k.Started).Seconds()
	}
	return r
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
		ps.Reachable = now.Sub(p.LastHandshakeTime) < status.ReachableWithin
	}
	return ps
}

// statusLine is the one-line STATUS= for systemd.
func (a *app) statusLine() string {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	return fmt.Sprintf("%s %s up (%s), %d peers, k3s %s supervised", cfg.Cluster.Interface.Name,
		cfg.Self.Address, a.tun.Choice().Mode, len(cfg.Peers()), supervisor.Args(cfg)[0])
}
