package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Link kinds as rtnetlink names them (ip -d link).
const (
	KindWireGuard = "wireguard"
	KindTUN       = "tuntap"
)

// DefaultStateDir is where the tunnel records the link it made.
const DefaultStateDir = "/run/wgk3s"

// ErrNotOurs is returned, wrapped, for an existing interface the appliance
// did not make: it is never removed or taken over.
var ErrNotOurs = errors.New("the appliance did not make it and never removes it")

// linkInfo is what the tunnel needs to know of an existing link.
type linkInfo struct {
	Kind  string
	Index int
}

// LinkState describes an interface name on this host.
type LinkState struct {
	Exists bool
	Kind   string // KindWireGuard, KindTUN, veth, bridge, ...
	// Ours is true when this appliance made the link (its record in the
	// state directory names the same link).
	Ours bool
}

// Inspect reports what the interface name is on this host, for the plan.
func Inspect(name, stateDir string) (LinkState, error) {
	return inspect(netlinkHost{}, name, stateDir)
}

func inspect(h host, name, stateDir string) (LinkState, error) {
	info, exists, err := h.linkInfo(name)
	if err != nil || !exists {
		return LinkState{}, err
	}
	st := LinkState{Exists: true, Kind: info.Kind}
	if info.Kind == KindWireGuard || info.Kind == KindTUN {
		idx, ok := readRecord(stateDir, name)
		st.Ours = ok && idx == info.Index
	}
	return st, nil
}

// NotOursError explains why an existing link is left alone, with the fix.
func NotOursError(name string, st LinkState) error {
	if st.Kind == KindWireGuard || st.Kind == KindTUN {
		return fmt.Errorf("interface.name %s: a %s interface of that name exists and %w (wg-quick up %s, or another tool?); "+
			"fix: take it down (wg-quick down %s) or set interface.name to a free name", name, st.Kind, ErrNotOurs, name, name)
	}
	return fmt.Errorf("interface.name %s is an existing %s interface; %w; fix: set interface.name to a free name such as %s", name, kindName(st.Kind), ErrNotOurs, FreeName(name))
}

// FreeName suggests an interface name no interface on this host has, for
// a message about name: wg0, else wg1, wg2, ...
func FreeName(name string) string {
	for i := range 100 {
		n := fmt.Sprintf("wg%d", i)
		if n == name {
			continue
		}
		if _, err := net.InterfaceByName(n); err != nil {
			return n
		}
	}
	return "wg100"
}

func kindName(kind string) string {
	if kind == "" || kind == "device" {
		return "network"
	}
	return kind
}

func recordPath(stateDir, name string) string { return filepath.Join(stateDir, "link-"+name) }

// writeRecord notes that this appliance made the link with index idx.
func writeRecord(stateDir, name string, idx int) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(recordPath(stateDir, name), []byte(strconv.Itoa(idx)+"\n"), 0o600)
}

func readRecord(stateDir, name string) (int, bool) {
	b, err := os.ReadFile(recordPath(stateDir, name))
	if err != nil {
		return 0, false
	}
	idx, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return idx, err == nil
}

func removeRecord(stateDir, name string) { os.Remove(recordPath(stateDir, name)) }

// AddressOwners returns the names of the interfaces holding addr.
func AddressOwners(addr netip.Addr) ([]string, error) { return addressOwners(netlinkHost{}, addr) }

func addressOwners(h host, addr netip.Addr) ([]string, error) { return h.addressOwners(addr) }
