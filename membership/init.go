package membership

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// InitRequest is what `appliance init` is given: the node's entry, and
// where its key and (on the master) tokens go.
type InitRequest struct {
	Name, Address, Endpoint, ExternalIP string
	Role                                configs.Role
	KeyFile, TokenFile, AgentTokenFile  string
}

// Initialised is what init made.
type Initialised struct {
	// Entry is the node's entry for the cluster file's nodes list.
	Entry string
	// KeyCreated says the key was made now (else the one there is used);
	// Tokens are the token files made now, with what each is.
	KeyCreated bool
	Tokens     [][2]string
}

// check lists every problem of the request at once.
func (r InitRequest) check() error {
	var problems []string
	if r.Name == "" {
		problems = append(problems, "--name is required, such as --name k3s-node-1")
	} else if !configs.ValidNodeName(r.Name) {
		problems = append(problems, fmt.Sprintf("--name %q is not a valid Kubernetes node name: use lower-case letters, digits, '-' and '.'", r.Name))
	}
	if a, err := netip.ParseAddr(r.Address); err != nil || !a.Is4() {
		problems = append(problems, fmt.Sprintf("--address %q: give this node's IPv4 address inside the cluster's network, such as 192.168.2.2", r.Address))
	}
	switch r.Role {
	case configs.RoleMaster:
		if r.Endpoint == "" {
			problems = append(problems, "--endpoint is required on the master: the agents need it, such as --endpoint 203.0.113.10:51820")
		}
	case configs.RoleAgent, configs.RoleServer:
	default:
		problems = append(problems, fmt.Sprintf("--role %q: use master, server or agent", r.Role))
	}
	if _, err := configs.ParseEndpoint(r.Endpoint); r.Endpoint != "" && err != nil {
		problems = append(problems, fmt.Sprintf("--endpoint: %v; write HOST:PORT such as 203.0.113.10:51820", err))
	}
	if _, err := netip.ParseAddr(r.ExternalIP); r.ExternalIP != "" && err != nil {
		problems = append(problems, fmt.Sprintf("--external-ip %q is not an IP address", r.ExternalIP))
	}
	if len(problems) > 0 {
		return &BadRequest{Problem: "init: " + strings.Join(problems, "; "), Fix: "nothing was changed"}
	}
	return nil
}

// Init makes this node's key (0600) unless one is there, the master's
// server and agent tokens unless they are there, and returns the node's
// entry for the cluster file.
func Init(r InitRequest) (Initialised, error) {
	var out Initialised
	if err := r.check(); err != nil {
		return out, err
	}
	key, created, err := ensureKey(r.KeyFile)
	if err != nil {
		return out, err
	}
	out.KeyCreated = created
	if r.Role == configs.RoleMaster {
		for _, t := range [][2]string{
			{r.TokenFile, "the k3s server token (full admin of the cluster); it stays on this node"},
			{r.AgentTokenFile, "the k3s agent token; agents fetch it over wg0 (with sync: false, copy it to every agent)"},
		} {
			created, err := ensureToken(t[0])
			if err != nil {
				return out, err
			}
			if created {
				out.Tokens = append(out.Tokens, t)
			}
		}
	}
	out.Entry = r.entry(key.PublicKey())
	return out, nil
}

// entry renders the node's YAML entry for the cluster file's nodes list.
func (r InitRequest) entry(pub wgtypes.Key) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    address: %s\n", r.Name, r.Role, r.Address)
	if r.Endpoint != "" {
		fmt.Fprintf(&b, "    endpoint: %q\n", r.Endpoint)
	}
	if r.ExternalIP != "" {
		fmt.Fprintf(&b, "    external_ip: %s\n", r.ExternalIP)
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
		return k, true, atomicfile.CreateSecret(path, []byte(k.String()+"\n"))
	}
	if err != nil {
		return wgtypes.Key{}, false, err
	}
	if err := checkPrivate(path); err != nil {
		return wgtypes.Key{}, false, err
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return wgtypes.Key{}, false, &BadRequest{Flag: "--key-file", Problem: path + " exists but does not hold a WireGuard private key", Fix: "move it away and run init again"}
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
		return &BadRequest{Problem: fmt.Sprintf("%s is readable by group or others (mode %04o)", path, fi.Mode().Perm()), Fix: "chmod 600 " + path}
	}
	return nil
}
