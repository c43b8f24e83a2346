package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/membership"
	"github.com/wgk3s/wgk3s/status"
)

// DefaultEnvFile is the unit's environment file, where the role is.
const DefaultEnvFile = "/etc/sysconfig/wgk3s"

// now is the clock invite and join read; tests move it.
var now = time.Now

// masterFiles is the master's file at path and the running appliance's
// reload, for invite and remove. It refuses a file other than the one the
// running appliance runs: an edit there would reach nobody.
func masterFiles(path, sock string) (membership.Master, error) {
	data, err := configs.ReadFile(path)
	if err != nil {
		return membership.Master{}, usagef("reading %s: %v; pass --config with the master's cluster file", path, err)
	}
	cl, err := configs.Parse(data, path)
	if err != nil {
		return membership.Master{}, err
	}
	running, err := status.Running(sock)
	if err != nil {
		return membership.Master{}, err
	}
	if running {
		if err := sameFileAsRunning(path, sock); err != nil {
			return membership.Master{}, err
		}
	}
	return membership.Master{Files: membership.DiskFor(path, cl), Now: now, Reload: reloadRunning(sock)}, nil
}

// sameFileAsRunning refuses path unless it is the file the running
// appliance runs.
func sameFileAsRunning(path, sock string) error {
	r, err := status.FetchWithin(sock, 2*time.Second)
	if err != nil || r.Config == "" {
		return nil // an older appliance, or one too busy to say: the reload will tell
	}
	a, errA := os.Stat(path)
	b, errB := os.Stat(r.Config)
	if errA == nil && errB == nil && os.SameFile(a, b) {
		return nil
	}
	abs, _ := filepath.Abs(path)
	return usagef("--config %s is not the file the running appliance runs (%s): an edit there would reach no node; pass --config %s", abs, r.Config, r.Config)
}

// reloadRunning has the running appliance reload: ErrNoAppliance when none
// holds the status lock; a busy one is waited for (the reload is queued
// behind what it does).
func reloadRunning(sock string) func() error {
	return func() error {
		running, err := status.Running(sock)
		if err != nil {
			return err
		}
		if !running {
			return membership.ErrNoAppliance
		}
		return status.Reload(sock)
	}
}

func runInvite(e *env, args []string) error {
	var r membership.InviteRequest
	var config, sock, role, pub string
	var dryRun bool
	fs := flagSet(e, "invite")
	fs.StringVar(&config, "config", configs.DefaultPath, "the master's cluster file")
	fs.StringVar(&sock, "socket", status.DefaultSocket, "the running appliance's status socket")
	fs.StringVar(&r.Endpoint, "endpoint", "", "how the other nodes reach the new one, PUBLIC-IP-OR-DNS:PORT; leave out for a node behind NAT")
	fs.StringVar(&role, "role", string(configs.RoleAgent), "the new node's role: agent, or server (a k3s server joining the master's etcd)")
	fs.StringVar(&r.Address, "address", "", "its wg0 address (default: the next free one in network)")
	fs.StringVar(&pub, "public-key", "", "its public key, when its key was made on it (`appliance init`); the code then holds no secret")
	fs.DurationVar(&r.TTL, "ttl", membership.DefaultTTL, "how long the code works; the master removes the node if it has not made a handshake by then")
	fs.BoolVar(&dryRun, "dry-run", false, "check the change and print the lines it adds; make none")
	name, err := parseWithName(fs, args, "NAME, the new node's name, such as k3s-node-3")
	if err != nil {
		return err
	}
	r.Name, r.Role = name, configs.Role(role)
	if pub != "" {
		k, err := configs.ParsePublicKey(pub)
		if err != nil {
			return usagef("invite: --public-key: %v; print the node's key on it with `appliance pubkey < /etc/wgk3s/private.key`", err)
		}
		r.PublicKey = &k
	}
	m, err := masterFiles(config, sock)
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
	printInvited(e, inv, config, sock)
	return nil
}

func printInvited(e *env, inv membership.Invited, config, sock string) {
	where := "no endpoint: behind NAT, reached where the master sees it"
	if inv.Node.Endpoint != "" {
		where = "endpoint " + inv.Node.Endpoint
	}
	fmt.Fprintf(e.stderr, "added %s (%s, %s, %s) to %s\n", inv.Node.Name, inv.Node.Role, inv.Node.Address, where, config)
	if !inv.Running {
		fmt.Fprintf(e.stderr, "no appliance runs here (nothing holds %s.lock): %s is written and takes effect when wgk3s starts\n", sock, config)
	}
	if inv.KeyInCode {
		fmt.Fprintf(e.stderr, "the code holds a key for %s that works once: at its first contact the node replaces it with its own; until then hand the code over as you would a password (`appliance join -` reads it from stdin, out of the shell's history)\n", inv.Node.Name)
	}
	fmt.Fprintf(e.stderr, "it works until %s; if %s has not joined by then (its first contact with the master), the master removes it from the file\n", inv.Expires.Format(time.RFC3339), inv.Node.Name)
	fmt.Fprintf(e.stderr, "run this on the new node (the wgk3s package installed), then systemctl enable --now wgk3s:\n")
	fmt.Fprintf(e.stdout, "appliance join %s\n", inv.Code)
}

// parseWithName parses flags around one positional argument.
func parseWithName(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", usageError{err}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return "", usagef("%s: give %s", fs.Name(), what)
	}
	name := rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return "", usageError{err}
	}
	if len(fs.Args()) > 0 {
		return "", usagef("%s: unexpected argument %q", fs.Name(), fs.Args()[0])
	}
	return name, nil
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
	m, err := masterFiles(*config, *sock)
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
	fmt.Fprintf(e.stderr, "removed %s from %s\n", name, *config)
	if rm.Running && rm.Sync {
		fmt.Fprintf(e.stderr, "the other nodes follow by the sync; %s is handed the file that drops it and stops using the mesh\n", name)
	}
	fmt.Fprintf(e.stderr, "its Kubernetes node stays until you delete it: k3s kubectl delete node %s\n", name)
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
	text := arg
	if arg == "-" {
		line, err := bufio.NewReader(io.LimitReader(e.stdin, 128<<10)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		text = line
	}
	if r.Code, err = membership.Parse(text); err != nil {
		return usagef("join: %v", err)
	}
	j, err := membership.Join(r)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "joined as %s (%s, %s on %s); the master is %s at %s\n", j.Self.Name, j.Self.Role, j.Self.Address, j.Interface, j.Master.Name, j.Master.Endpoint)
	fmt.Fprintf(e.stderr, "wrote %s, %s (ROLE=%s)", r.Config, r.EnvFile, j.Self.Role)
	if j.KeyFile != "" {
		fmt.Fprintf(e.stderr, " and %s (0600)", j.KeyFile)
	}
	fmt.Fprintf(e.stderr, "; at its first start it fetches the master's file and its token over %s\n", j.Interface)
	fmt.Fprintf(e.stdout, "next: systemctl enable --now wgk3s\n")
	return nil
}
