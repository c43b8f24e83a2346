package appliance

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/doctor"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Ping pings the peer named node once over the path its tunnel takes now
// (`appliance ping`): a probe on WireGuard's port, to the peer's address
// or through its relay, then an ICMP echo inside wg0 (the tunnel's data
// path, keys and all). Either may be missing from the answer: the probe
// in kernel mode, the echo when the tunnel does not carry it.
func (a *App) Ping(ctx context.Context, node string) (doctor.PingAnswer, error) {
	p := a.Plan()
	var names []string
	for _, n := range p.Config.Peers() {
		names = append(names, n.Name)
		if n.Name != node {
			continue
		}
		ans := doctor.PingAnswer{Node: n.Name, Path: "direct"}
		if a.paths != nil {
			if st := a.paths.Status()[n.PublicKey]; st.Relayed {
				ans.Path = "relayed via " + st.Via
			}
		}
		at := a.endpointOf(n.PublicKey)
		if at.IsValid() {
			ans.Addr = at.String()
		}
		if mesh := a.tun.Mesh(); mesh != nil && at.IsValid() {
			if pong, ok := a.pong(ctx, mesh.Prober, n.PublicKey, at, time.Second); ok {
				ans.ProbeRTT = pong.RTT
			}
		}
		if e, err := a.parts.Echoer(p.Config.Cluster.Interface.Name, p.Config.Self.Address); err == nil {
			ans.TunnelRTT, err = e.Echo(ctx, n.Address, 84, time.Second)
			if err != nil {
				ans.TunnelError = err.Error()
			}
			e.Close()
		} else {
			ans.TunnelError = err.Error()
		}
		return ans, nil
	}
	return doctor.PingAnswer{}, fmt.Errorf("%q is no peer of %s; its peers are: %s", node, p.Config.Self.Name, strings.Join(names, ", "))
}

// endpointOf is where the tunnel sends to peer now (invalid: nowhere).
func (a *App) endpointOf(peer wgtypes.Key) netip.AddrPort {
	dev, err := a.device()
	if err != nil {
		return netip.AddrPort{}
	}
	for _, dp := range dev.Peers {
		if dp.PublicKey == peer && dp.Endpoint != nil {
			ap := dp.Endpoint.AddrPort()
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return netip.AddrPort{}
}
