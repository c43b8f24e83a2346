package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

type initFlags struct {
	name, address, endpoint, externalIP, role, keyFile, tokenFile, agentTokenFile string
}

func runInit(e *env, args []string) error {
	var f initFlags
	fs := flagSet(e, "init")
	fs.StringVar(&f.name, "name", "", "this node's name (becomes the k3s node name)")
	fs.StringVar(&f.address, "address", "", "this node's wg0 address, inside the cluster's network")
	fs.StringVar(&f.endpoint, "endpoint", "", "how the other nodes reach this one: PUBLIC-IP-OR-DNS:PORT (required on the master)")
	fs.StringVar(&f.externalIP, "external-ip", "", "this node's public IP, when the endpoint is a DNS name")
	fs.StringVar(&f.role, "role", string(configs.RoleAgent), "master, server (another k3s server; it fetches the server token over wg0) or agent")
	fs.StringVar(&f.keyFile, "key-file", configs.DefaultPrivateKeyFile, "the private key file (interface.private_key_file)")
	fs.StringVar(&f.tokenFile, "token-file", configs.DefaultTokenFile, "the k3s server token file (k3s.token_file); created on the master")
	fs.StringVar(&f.agentTokenFile, "agent-token-file", configs.DefaultAgentTokenFile, "the k3s agent token file (k3s.agent_token_file); created on the master")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := f.validate(); err != nil {
		return err
	}
	key, created, err := ensureKey(f.keyFile)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(e.stderr, "created %s (0600): this node's private key; keep it here, never copy it\n", f.keyFile)
	} else {
		fmt.Fprintf(e.stderr, "using the existing key in %s\n", f.keyFile)
	}
	if configs.Role(f.role) == configs.RoleMaster {
		for _, t := range []struct{ path, what string }{
			{f.tokenFile, "the k3s server token (full admin of the cluster); it stays on this node"},
			{f.agentTokenFile, "the k3s agent token; agents fetch it over wg0 (with sync: false, copy it to every agent)"},
		} {
			created, err := ensureToken(t.path)
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(e.stderr, "created %s (0600): %s\n", t.path, t.what)
			}
		}
	}
	fmt.Fprintf(e.stderr, "paste this entry under nodes: in the cluster file, then copy the file to every node:\n")
	fmt.Fprint(e.stdout, f.entry(key.PublicKey()))
	return nil
}

func (f *initFlags) validate() error {
	var problems []string
	if f.name == "" {
		problems = append(problems, "--name is required, such as --name k3s-node-1")
	} else if !configs.ValidNodeName(f.name) {
		problems = append(problems, fmt.Sprintf("--name %q is not a valid Kubernetes node name: use lower-case letters, digits, '-' and '.'", f.name))
	}
	if a, err := netip.ParseAddr(f.address); err != nil || !a.Is4() {
		problems = append(problems, fmt.Sprintf("--address %q: give this node's IPv4 address inside the cluster's network, such as 192.168.2.2", f.address))
	}
	switch configs.Role(f.role) {
	case configs.RoleMaster:
		if f.endpoint == "" {
			problems = append(problems, "--endpoint is required on the master: the agents need it, such as --endpoint 203.0.113.10:51820")
		}
	case configs.RoleAgent, configs.RoleServer:
	default:
		problems = append(problems, fmt.Sprintf("--role %q: use master, server or agent", f.role))
	}
	if f.endpoint != "" {
		if _, err := configs.ParseEndpoint(f.endpoint); err != nil {
			problems = append(problems, fmt.Sprintf("--endpoint: %v; write HOST:PORT such as 203.0.113.10:51820", err))
		}
	}
	if f.externalIP != "" {
		if _, err := netip.ParseAddr(f.externalIP); err != nil {
			problems = append(problems, fmt.Sprintf("--external-ip %q is not an IP address", f.externalIP))
		}
	}
	if len(problems) > 0 {
		return usagef("init: %s", strings.Join(problems, "; "))
	}
	return nil
}

// entry renders the node's YAML entry for the cluster file's nodes list.
func (f *initFlags) entry(pub wgtypes.Key) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: %s\n", f.name, f.role, f.address)
	if f.endpoint != "" {
		fmt.Fprintf(&b, "    endpoint: %s\n", f.endpoint)
	}
	if f.externalIP != "" {
		fmt.Fprintf(&b, "    external_ip: %s\n", f.externalIP)
	}
	fmt.Fprintf(&b, "    public_key: %q\n", pub.String())
	return b.String()
}

// ensureKey returns the private key in path, creating the file if missing.
// An existing file must be a valid key with mode 0600 or tighter.
func ensureKey(path string) (wgtypes.Key, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			return wgtypes.Key{}, false, fmt.Errorf("generating a key: %w", err)
		}
		return k, true, writeSecret(path, k.String()+"\n")
	}
	if err != nil {
		return wgtypes.Key{}, false, err
	}
	if err := checkPrivate(path); err != nil {
		return wgtypes.Key{}, false, err
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return wgtypes.Key{}, false, usagef("%s exists but does not hold a WireGuard private key; move it away and run init again", path)
	}
	return k, false, nil
}

func ensureToken(path string) (bool, error) {
	created, err := configs.CreateToken(path)
	if err != nil || created {
		return created, err
	}
	return false, checkPrivate(path)
}

func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return usagef("%s is readable by group or others (mode %04o); fix: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}
