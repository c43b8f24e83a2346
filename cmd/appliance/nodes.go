package main

// The commands that make keys and change who is in the cluster.

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"time"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/membership"
	"github.com/wgk3s/wgk3s/status"
)

// DefaultEnvFile is the unit's environment file, where the role is.
const DefaultEnvFile = "/etc/sysconfig/wgk3s"

// now is the clock invite and join read; tests move it.
var now = time.Now

func runInvite(e *env, args []string) error {
	var r membership.InviteRequest
	var config, sock, role string
	var dryRun bool
	fs := flagSet(e, "invite")
	fs.StringVar(&config, "config", configs.DefaultPath, "the master's cluster file")
	fs.StringVar(&sock, "socket", status.DefaultSocket, "the running appliance's status socket")
	fs.StringVar(&r.Endpoint, "endpoint", "", "how the other nodes reach the new one, PUBLIC-IP-OR-DNS:PORT; leave out for a node behind NAT")
	fs.StringVar(&role, "role", string(configs.RoleAgent), "the new node's role: agent, or server (a k3s server joining the master's etcd)")
	fs.StringVar(&r.Address, "address", "", "its wg0 address (default: the next free one in network)")
	fs.Func("public-key", "its public key, when its key was made on it (`appliance init`); the code then holds no secret", r.SetPublicKey)
	fs.DurationVar(&r.TTL, "ttl", membership.DefaultTTL, "how long the code works; the master removes the node if it has not made a handshake by then")
	fs.BoolVar(&dryRun, "dry-run", false, "check the change and print the lines it adds; make none")
	name, err := parseWithName(fs, args, "NAME, the new node's name, such as k3s-node-3")
	if err != nil {
		return err
	}
	r.Name, r.Role = name, configs.Role(role)
	m, err := membership.OpenMaster(config, sock, now)
	if err != nil {
		return err
	}
	if dryRun {
		lines, err := m.PlanInvite(r)
		if err == nil {
			fmt.Fprintf(e.stdout, "would add to %s (checked as a reload would):\n%s", config, lines)
		}
		return err
	}
	inv, err := m.Invite(r)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stderr, inv.Notes(config))
	fmt.Fprintf(e.stdout, "appliance join %s\n", inv.Code)
	return nil
}

// parseWithName parses flags around one positional argument.
func parseWithName(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", flagError(err)
	}
	if fs.NArg() == 0 {
		return "", usagef("%s: give %s", fs.Name(), what)
	}
	name := fs.Arg(0)
	return name, parseFlags(fs, fs.Args()[1:])
}

func runRemove(e *env, args []string) error {
	fs := flagSet(e, "remove")
	config := fs.String("config", configs.DefaultPath, "the master's cluster file")
	sock := fs.String("socket", status.DefaultSocket, "the running appliance's status socket")
	dryRun := fs.Bool("dry-run", false, "print the lines it removes; make no change")
	name, err := parseWithName(fs, args, "NAME, the node to remove")
	if err != nil {
		return err
	}
	m, err := membership.OpenMaster(*config, *sock, now)
	if err != nil {
		return err
	}
	if *dryRun {
		lines, err := m.PlanRemove(name)
		if err == nil {
			fmt.Fprintf(e.stdout, "would remove from %s:\n%s", *config, lines)
		}
		return err
	}
	rm, err := m.Remove(name)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stderr, rm.Notes(name, *config))
	return nil
}

func runJoin(e *env, args []string) error {
	r := membership.JoinRequest{Now: now()}
	fset := flagSet(e, "join")
	fset.StringVar(&r.Config, "config", configs.DefaultPath, "where to write the cluster file")
	fset.StringVar(&r.EnvFile, "env-file", DefaultEnvFile, "the unit's environment file, where the role goes")
	fset.BoolVar(&r.Force, "force", false, "replace a different configuration already on this node")
	arg, err := parseWithName(fset, args, "the code `appliance invite` printed on the master, or - to read it from stdin")
	if err != nil {
		return err
	}
	if r.Code, err = membership.ReadCode(arg, e.stdin); err != nil {
		return usagef("join: %v", err)
	}
	j, err := membership.Join(r)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stderr, j.Notes(r))
	fmt.Fprintf(e.stdout, "next: systemctl enable --now wgk3s\n")
	return nil
}

func runPromote(e *env, args []string) error {
	r := membership.PromoteRequest{}
	fs := flagSet(e, "promote")
	fs.StringVar(&r.Config, "config", configs.DefaultPath, "this server's cluster file")
	fs.StringVar(&r.EnvFile, "env-file", DefaultEnvFile, "the unit's environment file, where ROLE=master goes")
	fs.BoolVar(&r.Force, "force", false, "promote though the master still answers (two masters: see the README)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return appliance.Promote(r, e.stdout, e.stderr)
}

func runRestore(e *env, args []string) error {
	r := appliance.RestoreRequest{Socket: status.DefaultSocket}
	fs := flagSet(e, "restore")
	fs.StringVar(&r.Config, "config", configs.DefaultPath, "the cluster file (copied from any node)")
	fs.StringVar(&r.From, "from", "", "a sealed copy taken from a node's snapshot directory (default: ask the nodes at the next start)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return appliance.Restore(r, e.stdout, e.stderr)
}

func runGenkey(e *env, args []string) error {
	flags := flagSet(e, "genkey")
	out := flags.String("out", "", "write the key to FILE (created 0600; an existing file is not overwritten)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	k, err := configs.GenerateKey(*out)
	if errors.Is(err, fs.ErrExist) {
		return usagef("%s already exists; it was left as it is (remove it first to replace it)", *out)
	}
	if err == nil && *out == "" {
		fmt.Fprintln(e.stdout, k.String())
	}
	return err
}

func runPubkey(e *env, args []string) error {
	if err := parseFlags(flagSet(e, "pubkey"), args); err != nil {
		return err
	}
	k, err := configs.ReadPrivateKey(e.stdin)
	if err != nil {
		return usageError{err}
	}
	_, err = fmt.Fprintln(e.stdout, k.PublicKey().String())
	return err
}

func runInit(e *env, args []string) error {
	var r membership.InitRequest
	var role string
	fs := flagSet(e, "init")
	fs.StringVar(&r.Name, "name", "", "this node's name (becomes the k3s node name)")
	fs.StringVar(&r.Address, "address", "", "this node's wg0 address, inside the cluster's network")
	fs.StringVar(&r.Endpoint, "endpoint", "", "how the other nodes reach this one: PUBLIC-IP-OR-DNS:PORT (required on the master)")
	fs.StringVar(&r.ExternalIP, "external-ip", "", "this node's public IP, when the endpoint is a DNS name")
	fs.StringVar(&role, "role", string(configs.RoleAgent), "master, server (another k3s server; it fetches the server token over wg0) or agent")
	fs.StringVar(&r.KeyFile, "key-file", configs.DefaultPrivateKeyFile, "the private key file (interface.private_key_file)")
	fs.StringVar(&r.TokenFile, "token-file", configs.DefaultTokenFile, "the k3s server token file (k3s.token_file); created on the master")
	fs.StringVar(&r.AgentTokenFile, "agent-token-file", configs.DefaultAgentTokenFile, "the k3s agent token file (k3s.agent_token_file); created on the master")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r.Role = configs.Role(role)
	out, err := membership.Init(r)
	if err != nil {
		return err
	}
	fmt.Fprint(e.stderr, out.Notes(r))
	fmt.Fprint(e.stdout, out.Entry)
	return nil
}
