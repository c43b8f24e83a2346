package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/wgk3s/wgk3s/configs"
)

// Backends, as firewall.backend names them.
const (
	BackendAuto   = configs.BackendAuto
	BackendLegacy = configs.BackendLegacy
	BackendNFT    = configs.BackendNFT
)

// Options configure a Controller.
type Options struct {
	Logger *slog.Logger
	// Backend is auto, legacy or nft.
	Backend string
	// StateDir holds the saved sysctl values (default /run/wgk3s).
	StateDir string
	// ReconcilePeriod is how often rules are checked (default 5 s).
	ReconcilePeriod time.Duration
}

// iptablesClient is the part of go-iptables the controller uses.
type iptablesClient interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
}

var _ iptablesClient = (*iptables.IPTables)(nil)

// owned lists every chain the appliance may create, with the built-in chain
// that jumps to it. Cleanup removes exactly these.
var owned = []struct{ table, builtin, chain string }{
	{"filter", "INPUT", ChainInput},
	{"filter", "FORWARD", ChainForward},
	{"nat", "POSTROUTING", ChainPostrouting},
}

// Controller keeps the kernel's sysctls and iptables rules equal to a
// Desired state, puts back what others delete, and removes what it added.
//
// The periodic check costs one iptables-save and nothing else: after every apply the controller keeps what the kernel
// prints for its own chains and jumps (the fingerprint), and a check only
// compares a fresh one with it. Only a difference runs the per-rule checks
// and fixes. A check per rule (`iptables -C`) would fork once per rule
// every period and take the xtables lock that kube-proxy and flannel need.
type Controller struct {
	ipt  iptablesClient
	save saver
	// watch, when set, notifies changes to the rules (nf_tables'
	// netlink events); the check then runs on a change, and every
	// watchedPeriod as a safety net, instead of every period.
	watch   func(done <-chan struct{}) (<-chan struct{}, error)
	sysctls *sysctlKeeper
	log     *slog.Logger
	period  time.Duration
	backend string

	mu      sync.Mutex
	desired *Desired
	applied map[string]string // fingerprint per table after the last apply
}

// saver returns what iptables-save prints (every table).
type saver func() (string, error)

func newController(ipt iptablesClient, save saver, fs sysctlFS, opts Options, backend string) *Controller {
	return &Controller{
		ipt:     ipt,
		save:    save,
		sysctls: &sysctlKeeper{fs: fs, state: filepath.Join(opts.StateDir, "sysctl.json")},
		log:     opts.Logger,
		period:  opts.ReconcilePeriod,
		backend: backend,
	}
}

// Set makes the kernel match d and remembers d for the reconcile loop.
func (c *Controller) Set(d Desired) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.applyAndNote(d); err != nil {
		return err
	}
	c.desired = &d
	return nil
}

// applyAndNote applies d and notes the fingerprint of a state that apply
// found right. The fingerprint is read before an apply that changes
// nothing: a change someone makes after that read is either fixed by that
// apply (and the state read again) or differs from the fingerprint, so
// the next check sees it. Read after a fixing apply instead, it could
// take in a change made in between (firewalld inserting its REJECT just
// after our jump went back) as ours, and no check would look again.
func (c *Controller) applyAndNote(d Desired) (changed bool, err error) {
	for range 3 {
		fp := c.fingerprints()
		fixed, err := c.apply(d)
		if err != nil {
			c.applied = nil // check in full next time
			return changed, err
		}
		changed = changed || fixed
		if !fixed {
			c.applied = fp
			return changed, nil
		}
	}
	c.applied = nil // still changing under us: check in full next time
	return changed, nil
}

// tables are the iptables tables the appliance's chains live in.
var tables = []string{"filter", "nat"}

// fingerprints reads every table's fingerprint from one iptables-save; a
// dump that cannot be read gives none, so the next check runs the full
// apply.
func (c *Controller) fingerprints() map[string]string {
	dump, err := c.save()
	if err != nil {
		c.log.Debug("iptables-save failed", "err", err)
		return nil
	}
	out := map[string]string{}
	for _, t := range tables {
		out[t] = fingerprint(dump, t)
	}
	return out
}

// fingerprint is the part of a table's iptables-save output the appliance
// owns: its chains (declared or not, and their rules in order) and, for
// each built-in chain it jumps from, the first rule (the jump must stay
// first) and every rule that jumps to one of its chains.
func fingerprint(dump, table string) string {
	ours := map[string]bool{}
	builtins := map[string]bool{}
	for _, o := range owned {
		if o.table == table {
			ours[o.chain], builtins[o.builtin] = true, true
		}
	}
	var b strings.Builder
	first := map[string]bool{}
	in := false
	for _, line := range strings.Split(dump, "\n") {
		if strings.HasPrefix(line, "*") {
			in = line == "*"+table
			continue
		}
		f := strings.Fields(line)
		switch {
		case !in:
		case len(f) >= 1 && strings.HasPrefix(f[0], ":") && ours[f[0][1:]]:
			b.WriteString(f[0] + "\n") // declared (counters left out)
		case len(f) < 2 || f[0] != "-A":
		case ours[f[1]]:
			b.WriteString(line + "\n")
		case builtins[f[1]] && !first[f[1]]:
			first[f[1]] = true
			b.WriteString("first " + line + "\n")
		case builtins[f[1]] && len(f) >= 4 && f[len(f)-2] == "-j" && ours[f[len(f)-1]]:
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// unchanged reports whether every table still prints what it printed
// after the last apply.
func (c *Controller) unchanged() bool {
	if c.applied == nil {
		return false
	}
	now := c.fingerprints()
	for _, t := range tables {
		if f, ok := now[t]; !ok || f != c.applied[t] {
			return false
		}
	}
	return true
}

// apply makes the kernel match d and reports whether it had to change
// anything. It is idempotent.
func (c *Controller) apply(d Desired) (changed bool, err error) {
	if err := c.sysctls.set(d.Sysctls); err != nil {
		return false, err
	}
	byChain := map[string][]Rule{}
	for _, r := range d.Rules {
		byChain[r.Table+"/"+r.Chain] = append(byChain[r.Table+"/"+r.Chain], r)
	}
	for _, o := range owned {
		rules, wanted := byChain[o.table+"/"+o.chain]
		if !wanted {
			removed, err := c.removeChain(o.table, o.builtin, o.chain)
			if err != nil {
				return changed, err
			}
			changed = changed || removed
			continue
		}
		fixed, err := c.syncChain(o.table, o.chain, rules)
		if err != nil {
			return changed, err
		}
		changed = changed || fixed
	}
	for _, j := range d.Jumps {
		fixed, err := c.syncJump(j)
		if err != nil {
			return changed, err
		}
		changed = changed || fixed
	}
	return changed, nil
}

// syncChain makes an owned chain hold exactly rules, in order. When it
// already does it is not touched; otherwise it is rebuilt.
func (c *Controller) syncChain(table, chain string, rules []Rule) (bool, error) {
	exists, err := c.ipt.ChainExists(table, chain)
	if err != nil {
		return false, fmt.Errorf("checking chain %s/%s: %w", table, chain, err)
	}
	if exists {
		current, err := c.ruleSpecs(table, chain)
		if err != nil {
			return false, err
		}
		if len(current) == len(rules) && c.allExist(rules) {
			return false, nil
		}
		if err := c.ipt.ClearChain(table, chain); err != nil {
			return false, fmt.Errorf("flushing %s/%s: %w", table, chain, err)
		}
	} else if err := c.ipt.NewChain(table, chain); err != nil {
		return false, fmt.Errorf("creating chain %s/%s: %w", table, chain, err)
	}
	for _, r := range rules {
		if err := c.ipt.Append(r.Table, r.Chain, r.Spec...); err != nil {
			return true, fmt.Errorf("adding %s: %w", r, err)
		}
	}
	return true, nil
}

func (c *Controller) allExist(rules []Rule) bool {
	for _, r := range rules {
		if ok, err := c.ipt.Exists(r.Table, r.Chain, r.Spec...); err != nil || !ok {
			return false
		}
	}
	return true
}

// syncJump makes the built-in chain hold exactly one jump j, and first, so
// that a catch-all REJECT cannot shadow it. First matters after a firewalld
// reload: it flushes the chains, then inserts its rules at fixed positions
// (`-I INPUT 7 -j REJECT` through `iptables-restore -n`); a reconcile that
// runs between the two puts the jump back, and the REJECT then lands above
// it. Only checking that the jump exists would leave it there for good.
func (c *Controller) syncJump(j Rule) (bool, error) {
	target := j.Spec[len(j.Spec)-1]
	specs, err := c.ruleSpecs(j.Table, j.Chain)
	if err != nil {
		return false, err
	}
	jumps := jumpsIn(specs, target)
	if len(jumps) == 1 && slices.Equal(jumps[0], j.Spec) {
		if slices.Equal(specs[0], j.Spec) {
			return false, nil
		}
		c.log.Warn("the jump to "+target+" was not first in "+j.Chain+" (rules were inserted above it, as a firewalld reload does); moved it back to the top",
			"table", j.Table, "first", strings.Join(specs[0], " "))
	}
	for _, spec := range jumps {
		if err := c.ipt.DeleteIfExists(j.Table, j.Chain, spec...); err != nil {
			return true, fmt.Errorf("removing a duplicate jump to %s: %w", target, err)
		}
	}
	if err := c.ipt.Insert(j.Table, j.Chain, 1, j.Spec...); err != nil {
		return true, fmt.Errorf("adding %s: %w", j, err)
	}
	return true, nil
}

// jumpsTo returns the specs of every rule in table/chain that jumps to target.
func (c *Controller) jumpsTo(table, chain, target string) ([][]string, error) {
	specs, err := c.ruleSpecs(table, chain)
	if err != nil {
		return nil, err
	}
	return jumpsIn(specs, target), nil
}

// jumpsIn returns the specs that jump to target.
func jumpsIn(specs [][]string, target string) [][]string {
	var out [][]string
	for _, s := range specs {
		if n := len(s); n >= 2 && s[n-2] == "-j" && s[n-1] == target {
			out = append(out, s)
		}
	}
	return out
}

// ruleSpecs lists the rules of table/chain as rule specs (without "-A CHAIN").
func (c *Controller) ruleSpecs(table, chain string) ([][]string, error) {
	lines, err := c.ipt.List(table, chain)
	if err != nil {
		return nil, fmt.Errorf("listing %s/%s: %w", table, chain, err)
	}
	var out [][]string
	for _, l := range lines {
		f := splitRule(l)
		if len(f) >= 2 && f[0] == "-A" {
			out = append(out, f[2:])
		}
	}
	return out, nil
}

// removeChain removes the jumps to chain and the chain itself. Whatever is
// already gone counts as removed.
func (c *Controller) removeChain(table, builtin, chain string) (bool, error) {
	exists, err := c.ipt.ChainExists(table, chain)
	if err != nil {
		return false, fmt.Errorf("checking chain %s/%s: %w", table, chain, err)
	}
	jumps, err := c.jumpsTo(table, builtin, chain)
	if err != nil && exists {
		return false, err
	}
	for _, spec := range jumps {
		if err := c.ipt.DeleteIfExists(table, builtin, spec...); err != nil {
			return true, fmt.Errorf("removing the jump to %s: %w", chain, err)
		}
	}
	if !exists {
		return len(jumps) > 0, nil
	}
	if err := c.ipt.ClearAndDeleteChain(table, chain); err != nil {
		return true, fmt.Errorf("removing chain %s/%s: %w", table, chain, err)
	}
	return true, nil
}

// watchedPeriod is how often the rules are checked when changes are
// notified (nf_tables' events, legacy tables' summaries): only as a safety
// net.
const watchedPeriod = time.Minute

// settle is how long a check waits after a notified change for the rest
// of a burst (an iptables-restore of kube-proxy's rules is many events);
// minGap keeps rules that change all the time (kube-proxy under churn)
// from costing more than one check a second.
const (
	settle = 200 * time.Millisecond
	minGap = time.Second
)

// Run checks the rules and puts back what someone else deleted (a
// firewalld reload, `iptables -F`): on every notified change where the
// backend notifies (nf_tables), else every period. When ctx is cancelled
// it removes everything it added.
func (c *Controller) Run(ctx context.Context) error {
	period := c.period
	var changed <-chan struct{}
	if c.watch != nil {
		done := make(chan struct{})
		defer close(done)
		ch, err := c.watch(done)
		if err != nil {
			c.log.Warn("cannot watch nf_tables for changes; checking the rules every "+period.String(), "err", err)
		} else {
			changed, period = ch, max(period, watchedPeriod)
		}
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return c.CleanUp()
		case <-tick.C:
		case <-changed:
			select {
			case <-ctx.Done():
				return c.CleanUp()
			case <-time.After(max(settle, minGap-time.Since(last))):
			}
		}
		c.reconcile()
		last = time.Now()
	}
}

func (c *Controller) reconcile() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.desired == nil {
		return
	}
	if err := c.sysctls.set(c.desired.Sysctls); err != nil {
		c.log.Warn("firewall reconcile: sysctls failed; retrying next period", "err", err)
	}
	if c.unchanged() {
		return
	}
	changed, err := c.applyAndNote(*c.desired)
	switch {
	case err != nil:
		c.log.Warn("firewall reconcile failed; retrying next period", "err", err)
	case changed:
		c.log.Warn("firewall rules were changed by someone else and have been put back", "backend", c.backend)
	}
}

// CleanUp removes every chain and jump the appliance owns and restores the
// sysctls it changed. It is safe to call when nothing is there.
func (c *Controller) CleanUp() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, o := range owned {
		if _, err := c.removeChain(o.table, o.builtin, o.chain); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.sysctls.restore())
	c.desired, c.applied = nil, nil
	return errors.Join(errs...)
}

// HasRules says whether the kernel holds any of the appliance's chains in
// this backend, from one iptables-save, which (unlike a listing or a
// delete) never creates a table: a cleanup on an nf_tables host must not
// leave empty legacy tables behind for later iptables-save runs to warn
// about.
func (c *Controller) HasRules() (bool, error) {
	dump, err := c.save()
	if err != nil {
		return false, err
	}
	for _, o := range owned {
		if strings.Contains(dump, ":"+o.chain+" ") || strings.Contains(dump, "-j "+o.chain) {
			return true, nil
		}
	}
	return false, nil
}

// Backend is the iptables backend in use: "legacy" or "nft".
func (c *Controller) Backend() string { return c.backend }

// CatchAllNote describes the catch-all REJECT or DROP that ends INPUT or
// FORWARD (firewalld's on CentOS 7 does), and what the appliance does about
// it, or "" when there is none. The appliance's chains are jumped to first
// and accept what the cluster needs, so there is nothing to do by hand.
func (c *Controller) CatchAllNote() string {
	var found []string
	for _, chain := range []string{"INPUT", "FORWARD"} {
		lines, err := c.ipt.List("filter", chain)
		if err != nil {
			continue
		}
		for _, l := range lines {
			f := splitRule(l)
			catchAll := len(f) >= 4 && f[0] == "-A" && f[2] == "-j" && (f[3] == "REJECT" || f[3] == "DROP")
			if l == "-P "+chain+" DROP" || catchAll {
				found = append(found, strconv.Quote(l))
				break
			}
		}
	}
	if len(found) == 0 {
		return ""
	}
	return "the host's firewall drops what no rule accepts (" + strings.Join(found, ", ") + ", firewalld's default): " +
		"the appliance's chains come first and accept the WireGuard port, traffic from the mesh on wg0 and the k3s pod and service networks; " +
		"nothing else is opened and nothing needs to be done by hand"
}

// splitRule splits an `iptables -S` line into words, honouring the double
// quotes iptables puts around comments with spaces.
func splitRule(line string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQuote, have = !inQuote, true
		case ch == ' ' && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
