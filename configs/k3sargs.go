package configs

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
)

// OwnedFlags are the k3s flags the appliance derives from the cluster file,
// by their long names. An extra argument that sets one of them would fight
// the appliance (or, for the token, put a secret in argv), so it is refused
// in any spelling k3s accepts.
var OwnedFlags = map[string]string{
	"node-ip":           "the node's address in nodes[]",
	"i":                 "the node's address in nodes[]",
	"node-external-ip":  "external_ip in nodes[]",
	"advertise-address": "k3s.advertise",
	"flannel-iface":     "interface.name",
	"node-name":         "name in nodes[]",
	"server":            "the master entry in nodes[]",
	"s":                 "the master entry in nodes[]",
	"token":             "k3s.token_file (a token in argv is visible to every user in ps)",
	"t":                 "k3s.token_file (a token in argv is visible to every user in ps)",
	"token-file":        "k3s.token_file",
	"agent-token-file":  "k3s.agent_token_file",
	"agent-token":       "k3s.agent_token_file (a token in argv is visible to every user in ps)",
}

// Default k3s networks (k3s server --help).
var (
	DefaultClusterCIDR = netip.MustParsePrefix("10.42.0.0/16")
	DefaultServiceCIDR = netip.MustParsePrefix("10.43.0.0/16")
)

// SplitFlag reads one argv element the way k3s's flag parser does: one or
// two dashes, then the name, then an optional =value. It also splits at
// white space, since `"--token-file /x"` written as one YAML item is a
// flag with a value to a reader (and to a shell-minded operator). isFlag is
// false for an element that is not a flag (a value).
func SplitFlag(arg string) (name, value string, hasValue, isFlag bool) {
	a := strings.TrimLeftFunc(arg, unicode.IsSpace)
	if !strings.HasPrefix(a, "-") {
		return "", "", false, false
	}
	a = strings.TrimLeft(a, "-")
	end := strings.IndexFunc(a, func(r rune) bool { return r == '=' || unicode.IsSpace(r) })
	if end < 0 {
		return a, "", false, true
	}
	return a[:end], strings.TrimLeftFunc(a[end+1:], unicode.IsSpace), true, true
}

// flagValue returns the values given to the flag name in args, in either
// form: --name=value or --name value.
func flagValues(args []string, name string) (values []string, at []int) {
	for i := 0; i < len(args); i++ {
		n, v, has, isFlag := SplitFlag(args[i])
		if !isFlag || n != name {
			continue
		}
		if !has && i+1 < len(args) {
			i++
			v = args[i]
		}
		values, at = append(values, v), append(at, i)
	}
	return values, at
}

func validateExtraArgs(field string, args []string, c *collector) {
	for i, a := range args {
		name, _, _, isFlag := SplitFlag(a)
		if !isFlag {
			continue
		}
		if owner, owned := OwnedFlags[name]; owned {
			c.add(fmt.Sprintf("%s[%d]", field, i), "remove it; the appliance sets it from "+owner, "%s is a flag the appliance owns", dashed(name))
		}
	}
}

// clusterCIDRs reads --cluster-cidr and --service-cidr from server_args;
// IPv6 parts of a dual-stack value are left out (the mesh is IPv4).
func clusterCIDRs(args []string, c *collector) (pods, services []netip.Prefix) {
	return networks(args, "cluster-cidr", DefaultClusterCIDR, c), networks(args, "service-cidr", DefaultServiceCIDR, c)
}

// networks reads the IPv4 networks of the flag name (the last one given
// wins, as in k3s), or def.
func networks(args []string, name string, def netip.Prefix, c *collector) []netip.Prefix {
	values, at := flagValues(args, name)
	if len(values) == 0 {
		return []netip.Prefix{def}
	}
	var out []netip.Prefix
	for _, part := range strings.Split(values[len(values)-1], ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			c.add(fmt.Sprintf("k3s.server_args[%d]", at[len(at)-1]), "write a CIDR such as "+def.String(), "--%s %s is not a CIDR", name, quote(part))
			continue
		}
		if p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out
}

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}
