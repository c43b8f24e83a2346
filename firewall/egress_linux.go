package firewall

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/wgk3s/wgk3s/configs"
)

// ErrNoDefaultRoute is returned when egress is auto and there is no IPv4
// default route to take the interface from.
var ErrNoDefaultRoute = errors.New("no IPv4 default route")

// ResolveEgress turns firewall.egress_interface into an interface name:
// "auto" is the interface of the IPv4 default route; a name must exist.
// It only reads the routing table.
func ResolveEgress(name string) (string, error) {
	if name != configs.EgressAuto {
		if _, err := netlink.LinkByName(name); err != nil {
			return "", fmt.Errorf("firewall.egress_interface %q: %w; fix: name an existing interface (see `ip link`) or use auto", name, err)
		}
		return name, nil
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && !isDefault(r) || r.LinkIndex == 0 {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			return "", fmt.Errorf("default route's interface %d: %w", r.LinkIndex, err)
		}
		return link.Attrs().Name, nil
	}
	return "", fmt.Errorf("firewall.egress_interface is auto but there is %w; fix: set it to the internet-facing interface, such as eth0", ErrNoDefaultRoute)
}

func isDefault(r netlink.Route) bool {
	ones, _ := r.Dst.Mask.Size()
	return r.Dst.IP.IsUnspecified() && ones == 0
}
