package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
)

// runCleanup removes everything a run may have left: the firewall chains
// and jumps (in every iptables backend present), the saved sysctls, the
// WireGuard interface and its socket. systemd runs it as ExecStopPost=, so
// it must succeed when there is nothing to remove and must not need a
// valid cluster file.
func runCleanup(e *env, args []string) error {
	fs := flagSet(e, "cleanup", "[--config FILE] [--interface NAME]")
	path := fs.String("config", configs.DefaultPath, "the cluster file (read for the interface name if it parses)")
	iface := fs.String("interface", "", "the WireGuard interface (default: the file's interface.name, else wg0)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *iface == "" {
		*iface = configs.DefaultInterfaceName
		if data, err := os.ReadFile(*path); err == nil {
			if cl, err := configs.Parse(data, *path); err == nil {
				*iface = cl.Interface.Name
			}
		}
	}
	var errs []error
	for _, backend := range []string{firewall.BackendLegacy, firewall.BackendNFT} {
		fw, err := firewall.New(firewall.Options{Backend: backend})
		if err != nil {
			continue // that backend is not installed
		}
		if err := fw.CleanUp(); err != nil {
			errs = append(errs, fmt.Errorf("iptables-%s: %w", backend, err))
		}
	}
	if l, err := netlink.LinkByName(*iface); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", *iface, err))
		} else {
			fmt.Fprintf(e.stderr, "removed interface %s\n", *iface)
		}
	}
	sock := "/var/run/wireguard/" + *iface + ".sock"
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
