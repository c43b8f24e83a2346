package firewall

import (
	"bufio"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/internal/bounded"
)

// Drops lists the host's own rules, not the appliance's, that drop or
// reject UDP to port, or what arrives on iface, where the appliance's
// accept cannot win: in iptables' raw and mangle tables (they run before
// filter, where the appliance's chains are), and in nftables tables of
// other programs (every base chain decides on its own: an accept in one
// does not save a packet from another's drop). Each is the rule's text,
// with its table. A filter-table rule above the appliance's jump needs no
// listing: the appliance moves its jump back to the top.
func (c *Controller) Drops(port int, iface string) []string {
	var out []string
	if dump, err := c.save(); err == nil {
		out = append(out, iptablesDrops(dump, port, iface)...)
	}
	if nft, err := exec.LookPath("nft"); err == nil {
		if dump, err := bounded.Output(5*time.Second, nil, nft, "list", "ruleset"); err == nil {
			out = append(out, nftDrops(string(dump), port, iface)...)
		}
	}
	return out
}

// iptablesDrops finds, in an iptables-save dump, the raw and mangle
// rules that drop what the mesh needs.
func iptablesDrops(dump string, port int, iface string) []string {
	var out []string
	table := ""
	sc := bufio.NewScanner(strings.NewReader(dump))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "*") {
			table = line[1:]
			continue
		}
		if table != "raw" && table != "mangle" || !strings.HasPrefix(line, "-A ") {
			continue
		}
		f := splitRule(line)
		if len(f) < 2 || strings.HasPrefix(f[1], "WGK3S") {
			continue
		}
		target := ""
		if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) {
			target = f[i+1]
		}
		if target != "DROP" && target != "REJECT" {
			continue
		}
		if matchesMesh(f, port, iface) {
			out = append(out, "iptables -t "+table+" "+line)
		}
	}
	return out
}

// matchesMesh says whether a rule's words match UDP to port, what arrives
// on iface, or everything (no match at all besides the chain).
func matchesMesh(f []string, port int, iface string) bool {
	matches := 0
	for i := 2; i < len(f)-1; i++ {
		switch f[i] {
		case "--dport", "--destination-port":
			matches++
			if inPorts(f[i+1], port) {
				return true
			}
		case "--dports", "--destination-ports":
			matches++
			for _, one := range strings.Split(f[i+1], ",") {
				if inPorts(one, port) {
					return true
				}
			}
		case "-i", "--in-interface":
			matches++
			if f[i+1] == iface {
				return true
			}
		case "-p", "-s", "-d", "-m", "--protocol", "--source", "--destination":
			if f[i] != "-p" || f[i+1] != "udp" {
				matches++
			}
		}
	}
	return matches == 0
}

// inPorts says whether a port or a "from:to" range holds port.
func inPorts(s string, port int) bool {
	from, to, ok := strings.Cut(s, ":")
	if !ok {
		to = from
	}
	a, err1 := strconv.Atoi(from)
	b, err2 := strconv.Atoi(to)
	return err1 == nil && err2 == nil && a <= port && port <= b
}

// iptablesNFTTables are the tables iptables-nft makes: their rules are
// read from iptables-save.
var iptablesNFTTables = map[string]bool{"filter": true, "raw": true, "mangle": true, "nat": true, "security": true}

// nftDrops finds, in `nft list ruleset`, the rules of other programs'
// tables that drop UDP to port or what arrives on iface.
func nftDrops(dump string, port int, iface string) []string {
	var out []string
	table, skip := "", false
	sc := bufio.NewScanner(strings.NewReader(dump))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "table" {
			table = f[1] + " " + f[2]
			skip = (f[1] == "ip" || f[1] == "ip6") && iptablesNFTTables[f[2]]
			continue
		}
		if skip || table == "" {
			continue
		}
		words := strings.Fields(line)
		last := ""
		if len(words) > 0 {
			last = words[len(words)-1]
		}
		verdict := slices.Contains(words, "drop") || slices.Contains(words, "reject") || last == "drop"
		if !verdict || strings.HasPrefix(line, "type ") || strings.Contains(line, "policy") {
			continue
		}
		if nftMatches(words, port, iface) {
			out = append(out, "nft table "+table+": "+line)
		}
	}
	return out
}

func nftMatches(words []string, port int, iface string) bool {
	for i := 0; i < len(words)-1; i++ {
		switch words[i] {
		case "dport":
			v := strings.Trim(words[i+1], "{},")
			if inPorts(strings.ReplaceAll(v, "-", ":"), port) {
				return true
			}
			if v == "" && i+2 < len(words) { // a set: dport { 1, 5418 }
				for _, w := range words[i+1:] {
					if inPorts(strings.Trim(w, "{},"), port) {
						return true
					}
					if strings.HasSuffix(w, "}") {
						break
					}
				}
			}
		case "iifname", "iif":
			if strings.Trim(words[i+1], `"`) == iface {
				return true
			}
		}
	}
	return false
}
