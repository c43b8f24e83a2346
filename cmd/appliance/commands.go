package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
)

// command is one subcommand. The table below is the one place its usage
// is written: `appliance --help`, each command's --help and flag errors,
// and the README's commands table (`appliance help --markdown`, checked
// by TestTheREADMEsCommandsAreTheTable) all come from it.
type command struct {
	name string
	// args is what follows the name in the usage line.
	args string
	// short is the line --help prints; doc the README's description.
	short, doc string
	run        func(e *env, args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"run", "--role master|server|agent [--config FILE] [--node NAME] [--log-level LEVEL]", "run the appliance (the default when the first argument is a flag)",
			"runs the appliance (what systemd starts)", runAppliance},
		{"check", "[--role master|server|agent] [--config FILE] [--node NAME]", "validate the cluster file and print this node's plan; changes nothing",
			"validates and prints the plan: WireGuard mode and why, wg0, peers, sysctls, iptables rules, the exact k3s argv", runCheck},
		{"status", "[--json] [--socket PATH]", "show the running appliance: WireGuard mode, peers and paths, k3s child, reloads, sync",
			"asks the running appliance over its root-only socket `/run/wgk3s/status.sock` (it answers within a second, with its last report while busy); the same socket serves Go's profiles for root (`curl --unix-socket /run/wgk3s/status.sock http://wgk3s/debug/pprof/heap > heap.pprof`), never on the network", runStatus},
		{"reload", "[--socket PATH]", "make the running appliance re-read its cluster file, and wait: prints why a file was rejected (systemd's ExecReload)",
			"asks the running appliance to re-read its cluster file and waits: exit 0 when applied, 1 with every problem when rejected (the old configuration keeps running); what `systemctl reload wgk3s` runs", runReload},
		{"doctor", "[--json] [--socket PATH]", "say why this node or a peer does not connect, and what to do; exit 1 when it finds a problem",
			"asks the running appliance to check this node and every peer as seen from here (and the master's view of them): UDP dropped on the way, a path MTU below the tunnel's, a peer's key not the file's, an endpoint name that does not resolve, the clock, a host firewall or rp_filter, k3s certificates near expiry, this node's NAT, k3s not Ready; each finding names the node, the evidence and the fix (see \"When something does not connect\"); exit 0 healthy, 1 findings", runDoctor},
		{"ping", "NODE [-c N] [--socket PATH]", "ping a peer over the path the tunnel takes now: each answer with its path and round trip",
			"pings NODE once a second over the tunnel's current path (direct ip:port, or relayed via a node): a probe on WireGuard's port, and an ICMP echo through wg0 itself, each with its round trip, like `tailscale ping`; exit 1 when nothing answered", runPing},
		{"init", "--name NAME --address IP [--endpoint HOST:PORT] [--role agent|server|master] [--external-ip IP] [--key-file F] [--token-file F] [--agent-token-file F]", "create this node's key (and the master's tokens) and print its entry for the cluster file",
			"creates the key (0600) if missing, the server and agent tokens on the master, prints the node's entry", runInit},
		{"invite", "NAME [--endpoint HOST:PORT] [--address IP] [--role agent|server] [--public-key KEY] [--ttl 24h] [--dry-run] [--config FILE]", "on the master: add a node to the cluster file, reload, and print the `appliance join` line to run on it",
			"on the master: adds the node to the cluster file (inserted lines only, under the edits' lock), checks the result as a reload would, has the running appliance reload it (a rejected reload takes the node out again) and prints `appliance join CODE` (see \"Adding a node\"); refuses a --config other than the file the running appliance runs", runInvite},
		{"join", "[--config FILE] [--env-file FILE] [--force] CODE|-", "on a new node: write its key, cluster file and role from the code `appliance invite` printed",
			"on the new node: writes its key (0600, unless the code was made with `--public-key`), a cluster file with the master's settings and the two entries, and `ROLE=` in `/etc/sysconfig/wgk3s`; refuses an expired or mistyped code and a different configuration already there (unless `--force`)", runJoin},
		{"remove", "NAME [--dry-run] [--config FILE]", "on the master: drop a node from the cluster file and reload (the others follow)",
			"on the master: removes the node's entry (and the comment lines right above it) and reloads; the other nodes follow by the sync", runRemove},
		{"promote", "[--config FILE] [--env-file FILE] [--force]", "on a server, when the master's machine is lost for good: become the master",
			"on a server, when the master's machine is lost for good: its role becomes master and the lost master leaves its file (ROLE=master too), then the service restarts as the master and every node follows it; refuses while the old master still answers over wg0 unless `--force` (two masters); with a real k3s, `k3s kubectl delete node OLD` then removes the lost etcd member (see \"When the master's machine is lost\")", runPromote},
		{"restore", "[--config FILE] [--from FILE]", "on the master's new machine, when a lone master's machine is lost: bring its datastore back from the nodes' copies",
			"on the master's new machine (the cluster file from any node, the master's private key and the server token put back): marks the master so that its next start asks every node for its newest sealed copy of the datastore, restores the newest that opens with the token, then starts k3s; `--from` restores a copy taken from a node's snapshot directory by hand, at once; refuses while an appliance runs, and over an existing datastore (see \"When the master's machine is lost\")", runRestore},
		{"cleanup", "[--config FILE] [--interface NAME] [--all] [--force]", "remove the firewall rules, sysctl changes, wg0 and its socket left by a run (systemd's ExecStopPost)",
			"as root: stops a k3s a crashed run left (recorded in `/run/wgk3s/k3s.json`), removes the firewall chains (each iptables backend that has them), restores saved sysctls, removes wg0 and its socket and the fail-closed routes of networks the file no longer has (those of its own networks only with `--all`; it says which it keeps); safe when nothing is there; refuses while an appliance runs (it holds `/run/wgk3s/status.sock.lock`, even when it does not answer), unless `--force`", runCleanup},
		{"genkey", "[--out FILE]", "print a new private key (like wg genkey); --out writes it 0600",
			"like `wg genkey`; `--out` creates the file 0600 and never overwrites", runGenkey},
		{"pubkey", "< private.key", "read a private key on stdin, print its public key (like wg pubkey)",
			"like `wg pubkey`", runPubkey},
		{"version", "", "print the version", "the version", runVersion},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// line is the command's usage line, without "appliance ".
func (c command) line() string {
	if c.name == "run" {
		return strings.TrimSpace(c.args) // the default command: its flags alone
	}
	return strings.TrimSpace(c.name + " " + c.args)
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "wgk3s appliance %s: one k3s cluster across clouds over a WireGuard full mesh\n\nUsage:\n", version)
	fmt.Fprintf(w, "  appliance --role master|server|agent --config %s [--node NAME]\n", configs.DefaultPath)
	for _, c := range commands {
		fmt.Fprintf(w, "  appliance %-8s %s\n      %s\n", c.name, c.args, c.short)
	}
	fmt.Fprintf(w, "\nEvery command takes --help. Exit codes: 0 ok, 1 runtime failure (or findings), 2 bad usage or bad cluster file.\n")
}

// markdown writes the README's commands table.
func markdown(w io.Writer) {
	fmt.Fprintln(w, "| command | what it does |")
	fmt.Fprintln(w, "| --- | --- |")
	for _, c := range commands {
		fmt.Fprintf(w, "| `appliance %s` | %s |\n", strings.ReplaceAll(c.line(), "|", `\|`), c.doc)
	}
}
