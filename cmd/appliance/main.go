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
	"strings"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/membership"
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
		if len(args) == 1 && args[0] == "--markdown" {
			markdown(e.stdout)
		} else {
			usage(e.stdout)
		}
		return exitOK
	}
	if c, ok := lookup(name); ok {
		return exitCode(e, c.run(e, args))
	}
	fmt.Fprintf(e.stderr, "appliance: unknown command %q\n\n", name)
	usage(e.stderr)
	return exitUsage
}

func isFlag(s string) bool { return len(s) > 0 && s[0] == '-' && s != "-h" && s != "--help" }

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
	if errors.As(err, &ce) {
		err = fmt.Errorf("the cluster file has %d problem(s); nothing was changed:\n  %s", len(ce), strings.ReplaceAll(ce.Error(), "\n", "\n  "))
	}
	fmt.Fprintf(e.stderr, "appliance: %v\n", err)
	var ue usageError
	var he *appliance.HostError
	var br *membership.BadRequest
	var re *configs.RoleError
	if ce != nil || errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &br) || errors.As(err, &re) {
		return exitUsage
	}
	return exitFailure
}

// flagSet returns a FlagSet that reports to e.stderr, with the command's
// usage line from the table, and returns errors instead of exiting.
func flagSet(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c, _ := lookup(name)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: appliance %s %s\n", name, c.args)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns a flag error into a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// flagError is a flag error as a usage error (exit 2); --help is none.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{err}
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

func runVersion(e *env, args []string) error {
	if err := parseFlags(flagSet(e, "version"), args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "appliance %s\n", version)
	return nil
}
