package tunnel

import (
	"net/netip"
	"slices"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config is the desired state of the WireGuard interface.
type Config struct {
	Name       string
	Mode       configs.Mode
	PrivateKey wgtypes.Key
	ListenPort int
	MTU        int
	// Address is this node's address with the cluster network's prefix
	// length; the kernel derives the on-link route to the mesh from it.
	Address netip.Prefix
	Peers   []Peer
	// BatchSize caps wireguard-go's batches in userspace mode (0: its own).
	BatchSize int
	// Inflight bounds the packets wireguard-go holds per direction in
	// userspace mode (0: no bound).
	Inflight int
	// FailClosed are the networks whose traffic must never leave by
	// another interface: the mesh and the k3s pod networks (flannel's
	// VXLAN runs over wg0 and goes with it). Each gets a blackhole route
	// behind the more specific routes of wg0 and flannel.
	FailClosed []netip.Prefix
	// HoldOldKeys keeps a peer's old key until its new key makes a
	// handshake, however long that takes (keychange.go): on the master,
	// where a node whose key-change answer was lost asks again with it.
	HoldOldKeys bool
}

// Peer is one other node.
type Peer struct {
	Name      string
	PublicKey wgtypes.Key
	// Endpoint is host:port as written in the cluster file; the host may be
	// a DNS name. Empty means no endpoint: the peer is learned when it
	// connects.
	Endpoint   configs.Endpoint
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
}

// FromCluster derives the tunnel's desired state for this node: every other
// node is a peer whose only allowed IP is its wg address.
func FromCluster(cfg *configs.Config) Config {
	cl := cfg.Cluster
	c := Config{
		HoldOldKeys: cfg.Self.Role == configs.RoleMaster,
		Name:        cl.Interface.Name,
		Mode:        cl.Interface.Mode,
		PrivateKey:  cfg.PrivateKey.Key(),
		ListenPort:  cl.Interface.ListenPort,
		MTU:         cl.Interface.MTU,
		Address:     netip.PrefixFrom(cfg.Self.Address, cl.Network.Bits()),
		BatchSize:   cl.Runtime.BatchSize,
		Inflight:    cl.Runtime.Inflight,
		FailClosed:  append([]netip.Prefix{cl.Network.Masked()}, cl.K3s.PodCIDRs...),
	}
	for _, n := range cfg.Peers() {
		c.Peers = append(c.Peers, Peer{
			Name:       n.Name,
			PublicKey:  n.PublicKey,
			Endpoint:   n.Endpoint,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(n.Address, 32)},
			Keepalive:  cl.Interface.PersistentKeepalive,
		})
	}
	return c
}

// String never includes the private key.
func (c Config) String() string {
	return c.Name + " " + c.Address.String()
}

func (p Peer) equal(q Peer) bool {
	return p.PublicKey == q.PublicKey && p.Endpoint == q.Endpoint && p.Keepalive == q.Keepalive &&
		slices.Equal(p.AllowedIPs, q.AllowedIPs)
}

func (p Peer) hasDNSEndpoint() bool {
	if p.Endpoint.Host == "" {
		return false
	}
	_, isIP := p.Endpoint.IP()
	return !isIP
}
