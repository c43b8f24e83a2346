package tunnel

import (
	"net"
	"net/netip"
	"strings"
)

// LocalPrefixes are this host's IPv4 addresses, with their networks'
// prefix lengths, on the interfaces a peer might share with it (a LAN
// behind one router): not loopback, not the WireGuard interface, not the
// pods' (flannel, cni, veth) or containers'.
func LocalPrefixes(wgInterface string) []netip.Prefix {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Name == wgInterface || podInterface(ifc.Name) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !ip.Unmap().Is4() || ip.IsLinkLocalUnicast() {
				continue
			}
			bits, _ := ipn.Mask.Size()
			out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
		}
	}
	return out
}

func podInterface(name string) bool {
	for _, p := range []string{"flannel", "cni", "veth", "docker", "kube", "tun", "vxlan"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
