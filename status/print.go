package status

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Write writes r as JSON (asJSON) or for a human (Print).
func Write(w io.Writer, r Report, asJSON bool, now time.Time) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	Print(w, r, now)
	return nil
}

// Print writes r for a human.
func Print(w io.Writer, r Report, now time.Time) {
	fmt.Fprintf(w, "node       %s (%s), appliance %s, up %s\n", r.Node, r.Role, r.Version, age(now.Sub(r.Started)))
	fmt.Fprintf(w, "wireguard  %s: %s\n", r.Mode, r.ModeReason)
	fmt.Fprintf(w, "interface  %s %s, udp/%d, public key %s\n", r.Interface, r.Address, r.ListenPort, r.PublicKey)
	if r.Recreations > 0 {
		fmt.Fprintf(w, "           deleted by someone else and recreated %d time(s)\n", r.Recreations)
	}
	fmt.Fprintf(w, "firewall   iptables-%s, egress %s\n", r.Firewall.Backend, r.Firewall.Egress)
	k := r.K3s
	if k.Running {
		fmt.Fprintf(w, "k3s        running, pid %d, up %s, %d restart(s)", k.PID, age(time.Duration(k.UptimeSeconds*float64(time.Second))), k.Restarts)
	} else if k.RestartInSeconds > 0 {
		fmt.Fprintf(w, "k3s        restarting in %s (backoff after an exit), %d restart(s)", age(time.Duration(k.RestartInSeconds*float64(time.Second))), k.Restarts)
	} else {
		fmt.Fprintf(w, "k3s        not running, %d restart(s)", k.Restarts)
	}
	if k.LastExit != "" {
		fmt.Fprintf(w, ", last exit: %s", k.LastExit)
	}
	fmt.Fprintf(w, "\nreloads    %d, %d failed", r.Reloads.Total, r.Reloads.Failures)
	if r.Reloads.Last != "" {
		fmt.Fprintf(w, " (last: %s)", r.Reloads.Last)
	}
	if !r.Reloads.Running.IsZero() {
		fmt.Fprintf(w, "; a reload is being applied, for %s", age(now.Sub(r.Reloads.Running)))
	}
	if r.Sync != nil {
		printSync(w, r.Sync, now)
	}
	if sn := r.Snapshots; sn != nil {
		printSnapshots(w, sn, now)
	}
	if rl := r.Relay; rl != nil {
		fmt.Fprintf(w, "\nrelay      %d datagram(s) forwarded between other nodes (%s), still encrypted; %d dropped; %d session(s) routed now",
			rl.Packets, byteSize(int64(rl.Bytes)), rl.Dropped, rl.Entries)
	}
	if h := r.Health; h != nil {
		if n := h.Problems(); n > 0 {
			fmt.Fprintf(w, "\ndoctor     %d problem(s) %s ago: run appliance doctor", n, age(now.Sub(h.Taken)))
		} else {
			fmt.Fprintf(w, "\ndoctor     healthy %s ago", age(now.Sub(h.Taken)))
		}
	}
	fmt.Fprintf(w, "\n\npeers\n")
	if r.PeersUnavailable != "" {
		fmt.Fprintf(w, "  (%s)\n", r.PeersUnavailable)
	}
	fmt.Fprintf(w, "  %-16s %-22s %-18s %-14s %12s %12s  %-9s  %s\n", "NAME", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX", "TX", "REACHABLE", "PATH")
	for _, p := range r.Peers {
		printPeer(w, p)
	}
}

func age(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printSnapshots writes the snapshots' lines.
func printSnapshots(w io.Writer, s *Snapshots, now time.Time) {
	switch {
	case s.Restore != nil:
		fmt.Fprintf(w, "\nsnapshots  restoring the datastore from the nodes' copies: offered by %d (%s), waiting for %d (%s)",
			len(s.Restore.Offered), strings.Join(s.Restore.Offered, ", "), len(s.Restore.Waiting), strings.Join(s.Restore.Waiting, ", "))
	case s.Role == "off" || s.Off != "":
		fmt.Fprintf(w, "\nsnapshots  none taken: %s", s.Off)
	case s.Role == "taking" && s.Last == nil:
		fmt.Fprintf(w, "\nsnapshots  none taken yet (every %s when the datastore changed)", age(time.Duration(s.IntervalSeconds*float64(time.Second))))
	case s.Role == "taking":
		fmt.Fprintf(w, "\nsnapshots  last taken %s ago, %s, held by %d node(s): %s (every %s when the datastore changed)",
			age(now.Sub(s.Last.Taken)), byteSize(int64(s.Last.Bytes)), len(s.Holders), strings.Join(s.Holders, ", "), age(time.Duration(s.IntervalSeconds*float64(time.Second))))
	case s.Last == nil:
		fmt.Fprintf(w, "\nsnapshots  keeping none of the master's yet")
	default:
		fmt.Fprintf(w, "\nsnapshots  keeping %d of the master's (sealed), the newest taken %s ago, %s", s.Kept, age(now.Sub(s.Last.Taken)), byteSize(int64(s.Last.Bytes)))
	}
	if s.Problem != "" {
		fmt.Fprintf(w, "\n           problem: %s", s.Problem)
	}
}

// printSync writes the sync's lines.
func printSync(w io.Writer, s *Sync, now time.Time) {
	if s.Role == "serving" {
		fmt.Fprintf(w, "\nsync       serving revision %s to %d node(s) on %s; %d request(s) answered, %d refused (not a node's appliance)",
			s.Revision, s.Nodes, s.Master, s.Served, s.Denied)
	} else {
		fmt.Fprintf(w, "\nsync       following %s, running revision %s", s.Master, s.Revision)
		if s.Following != "" {
			fmt.Fprintf(w, "\n           the master does not answer: following %s meanwhile", s.Following)
		}
		if s.Nodes > 0 {
			fmt.Fprintf(w, "\n           serving it to %d node(s) in turn; %d request(s) answered, %d refused", s.Nodes, s.Served, s.Denied)
		}
		if !s.LastContact.IsZero() {
			fmt.Fprintf(w, ", master answered %s ago", age(now.Sub(s.LastContact)))
		}
		if !s.LastApplied.IsZero() {
			fmt.Fprintf(w, ", last took a file %s ago", age(now.Sub(s.LastApplied)))
		}
		if s.Refused != "" {
			fmt.Fprintf(w, "\n           refused the master's %s", s.Refused)
		}
		if s.Staged != "" {
			fmt.Fprintf(w, "\n           waiting for a restart: the master's %s", s.Staged)
		}
		if s.LastError != "" {
			fmt.Fprintf(w, "\n           last error: %s", s.LastError)
		}
	}
}

// printPeer writes one peer's row.
func printPeer(w io.Writer, p Peer) {
	hs := "never"
	if p.HandshakeAgeSeconds >= 0 {
		hs = age(time.Duration(p.HandshakeAgeSeconds*float64(time.Second))) + " ago"
	}
	ep := p.Endpoint
	if ep == "" {
		ep = "(none)"
	}
	reach := "no"
	if p.Reachable {
		reach = "yes"
	}
	if p.LearnedEndpoint != "" && p.Endpoint == "" {
		ep = p.LearnedEndpoint + " (learned)"
	}
	path := p.Path
	if p.Via != "" {
		path += " via " + p.Via
	}
	if p.RTTMillis > 0 {
		path += fmt.Sprintf(" (%.1f ms)", p.RTTMillis)
	}
	fmt.Fprintf(w, "  %-16s %-22s %-18s %-14s %12s %12s  %-9s  %s\n", p.Name, ep, strings.Join(p.AllowedIPs, ","), hs,
		byteSize(p.ReceiveBytes), byteSize(p.TransmitBytes), reach, path)
}
