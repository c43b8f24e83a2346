package membership

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/wgk3s/wgk3s/configs"
)

// What the commands tell the operator, beside their result on stdout.

// Notes are the lines `appliance invite` prints about inv.
func (inv Invited) Notes(config string) string {
	var b strings.Builder
	where := "no endpoint: behind NAT, reached where the master sees it"
	if inv.Node.Endpoint != "" {
		where = "endpoint " + inv.Node.Endpoint
	}
	fmt.Fprintf(&b, "added %s (%s, %s, %s) to %s\n", inv.Node.Name, inv.Node.Role, inv.Node.Address, where, config)
	if !inv.Running {
		fmt.Fprintf(&b, "no appliance runs here (nothing holds its status lock): %s is written and takes effect when wgk3s starts\n", config)
	}
	if inv.KeyInCode {
		fmt.Fprintf(&b, "the code holds a key for %s that works once: at its first contact the node replaces it with its own; until then hand the code over as you would a password (`appliance join -` reads it from stdin, out of the shell's history)\n", inv.Node.Name)
	}
	fmt.Fprintf(&b, "it works until %s; if %s has not joined by then (its first contact with the master), the master removes it from the file\n", inv.Expires.Format(time.RFC3339), inv.Node.Name)
	b.WriteString("run this on the new node (the wgk3s package installed), then systemctl enable --now wgk3s:\n")
	return b.String()
}

// Notes are the lines `appliance remove` prints about name.
func (rm Removed) Notes(name, config string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "removed %s from %s\n", name, config)
	if rm.Running && rm.Sync {
		fmt.Fprintf(&b, "the other nodes follow by the sync; %s is handed the file that drops it and stops using the mesh\n", name)
	}
	fmt.Fprintf(&b, "its Kubernetes node stays until you delete it: k3s kubectl delete node %s\n", name)
	return b.String()
}

// Notes are the lines `appliance join` prints about what it wrote.
func (j Joined) Notes(r JoinRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "joined as %s (%s, %s on %s); the master is %s at %s\n", j.Self.Name, j.Self.Role, j.Self.Address, j.Interface, j.Master.Name, j.Master.Endpoint)
	fmt.Fprintf(&b, "wrote %s, %s (ROLE=%s)", r.Config, r.EnvFile, j.Self.Role)
	if j.KeyFile != "" {
		fmt.Fprintf(&b, " and %s (0600)", j.KeyFile)
	}
	fmt.Fprintf(&b, "; at its first start it fetches the master's file and its token over %s\n", j.Interface)
	return b.String()
}

// Notes are the lines `appliance init` prints about what it made.
func (out Initialised) Notes(r InitRequest) string {
	var b strings.Builder
	if out.KeyCreated {
		fmt.Fprintf(&b, "created %s (0600): this node's private key; keep it here, never copy it\n", r.KeyFile)
	} else {
		fmt.Fprintf(&b, "using the existing key in %s\n", r.KeyFile)
	}
	for _, t := range out.Tokens {
		fmt.Fprintf(&b, "created %s (0600): %s\n", t[0], t[1])
	}
	if r.Role == configs.RoleMaster {
		fmt.Fprintf(&b, "keep a copy of %s and %s somewhere safe, off this machine: with them (and the cluster file, on every node) "+
			"`appliance restore` brings this master back on a new machine from the snapshots the other nodes keep; nothing else is needed\n", r.KeyFile, r.TokenFile)
	}
	b.WriteString("paste this entry under nodes: in the cluster file, then copy the file to every node:\n")
	return b.String()
}

// ReadCode is the join code given as arg, or read from stdin when arg
// is "-" (out of the shell's history).
func ReadCode(arg string, stdin io.Reader) (Code, error) {
	text := arg
	if arg == "-" {
		line, err := bufio.NewReader(io.LimitReader(stdin, 128<<10)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return Code{}, err
		}
		text = line
	}
	return Parse(text)
}
