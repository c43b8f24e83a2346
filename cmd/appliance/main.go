// Command appliance turns a few servers from different clouds into one k3s
// cluster over a WireGuard full mesh. Run under systemd as
//
//	appliance --role master --config /etc/wgk3s.yaml
//
// and see `appliance --help` for the helper commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/wgk3s/wgk3s/configs"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure
	exitUsage   = 2 // bad flags or a bad cluster file
)

// env is what a command may touch of the outside world; tests swap it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// root prefixes the paths probed for the kernel module (tests use a dir).
	root string
}

type command struct {
	name, usage, summary string
	run                  func(e *env, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"run", "--role master|server|agent [--config FILE] [--node NAME]", "run the appliance (the default when the first argument is a flag)", runAppliance},
		{"status", "[--json] [--socket PATH]", "show the running appliance: WireGuard mode, peers and handshakes, k3s child, reloads", runStatus},
		{"reload", "[--socket PATH]", "make the running appliance re-read its cluster file, and wait: prints why a file was rejected (systemd's ExecReload)", runReload},
		{"check", "[--role master|agent] [--config FILE] [--node NAME]", "validate the cluster file and print this node's plan; changes nothing", runCheck},
		{"init", "--name NAME --address IP [--endpoint HOST:PORT] [--role agent|master]", "create this node's key (and the master's token) and print its entry for the cluster file", runInit},
		{"invite", "NAME [--endpoint HOST:PORT] [--address IP] [--public-key KEY] [--ttl 24h] [--dry-run]", "on the master: add a node to the cluster file, reload, and print the `appliance join` line to run on it", runInvite},
		{"join", "[--config FILE] [--env-file FILE] [--force] CODE|-", "on a new node: write its key, cluster file and role from the code `appliance invite` printed", runJoin},
		{"remove", "NAME [--dry-run]", "on the master: drop a node from the cluster file and reload (the others follow)", runRemove},
		{"cleanup", "[--config FILE] [--interface NAME]", "remove the firewall rules, sysctl changes, wg0 and its socket left by a run (systemd's ExecStopPost)", runCleanup},
		{"genkey", "[--out FILE]", "print a new private key (like wg genkey); --out writes it 0600", runGenkey},
		{"pubkey", "", "read a private key on stdin, print its public key (like wg pubkey)", runPubkey},
		{"version", "", "print the version", runVersion},
	}
}

func main() {
	os.Exit(mainE(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, root: "/"}))
}

// mainE dispatches to a command and maps its error to an exit code.
func mainE(args []string, e *env) int {
	name := "run"
	if len(args) > 0 && !isFlag(args[0]) {
		name, args = args[0], args[1:]
	}
	if len(args) == 0 && name == "run" {
		usage(e.stderr)
		return exitUsage
	}
	switch name {
	case "help", "-h", "--help":
		usage(e.stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return exitCode(e, c.run(e, args))
		}
	}
	fmt.Fprintf(e.stderr, "appliance: unknown command %q\n\n", name)
	usage(e.stderr)
	return exitUsage
}

func isFlag(s string) bool { return len(s) > 0 && s[0] == '-' && s != "-h" && s != "--help" }

func usage(w io.Writer) {
	fmt.Fprintf(w, "wgk3s appliance %s: one k3s cluster across clouds over a WireGuard full mesh\n\nUsage:\n", version)
	fmt.Fprintf(w, "  appliance --role master|agent --config %s [--node NAME]\n", configs.DefaultPath)
	for _, c := range commands {
		fmt.Fprintf(w, "  appliance %-8s %s\n      %s\n", c.name, c.usage, c.summary)
	}
	fmt.Fprintf(w, "\nEvery command takes --help. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad cluster file.\n")
}

// usageError marks an error as the caller's mistake (exit 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func exitCode(e *env, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ce configs.Errors
	var ue usageError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(e.stderr, "appliance: the cluster file has %d problem(s); nothing was changed:\n", len(ce))
		for _, fe := range ce {
			fmt.Fprintf(e.stderr, "  %s\n", fe)
		}
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "appliance: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(e.stderr, "appliance: %v\n", err)
	return exitFailure
}

// flagSet returns a FlagSet that reports to e.stderr and returns errors
// instead of exiting.
func flagSet(e *env, name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: appliance %s %s\n", name, usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns a flag error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// nodeFlags are the flags that pick the cluster file and this node.
type nodeFlags struct {
	role, config, node string
}

func (n *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.role, "role", "", "this node's role: master, server or agent (must match its entry)")
	fs.StringVar(&n.config, "config", configs.DefaultPath, "the cluster file")
	fs.StringVar(&n.node, "node", "", "this node's name in the file (default: the entry matching the private key)")
}

func (n *nodeFlags) options(required bool) (configs.Options, error) {
	switch configs.Role(n.role) {
	case configs.RoleMaster, configs.RoleAgent, configs.RoleServer:
	case "":
		if required {
			return configs.Options{}, usagef("--role is required: --role master on the master, --role server on the other k3s servers, --role agent on the others")
		}
	default:
		return configs.Options{}, usagef("--role %q: use master, server or agent", n.role)
	}
	return configs.Options{Role: configs.Role(n.role), Node: n.node}, nil
}

func runVersion(e *env, args []string) error {
	fs := flagSet(e, "version", "")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "appliance %s\n", version)
	return nil
}
