package firewall

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// fakeIPT is an in-memory iptables with the semantics of the go-iptables
// methods the controller uses, rendering List like `iptables -S`.
type fakeIPT struct {
	// tables[table][chain] holds rule specs joined by spaces; a nil slice
	// for a chain that exists empty.
	tables map[string]map[string][]string
	order  map[string][]string // chain creation order per table
	calls  int                 // mutating calls
}

func newFakeIPT() *fakeIPT {
	f := &fakeIPT{tables: map[string]map[string][]string{}, order: map[string][]string{}}
	for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		f.chain("filter", c, true)
	}
	for _, c := range []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"} {
		f.chain("nat", c, true)
	}
	return f
}

func (f *fakeIPT) chain(table, chain string, create bool) ([]string, bool) {
	t, ok := f.tables[table]
	if !ok {
		t = map[string][]string{}
		f.tables[table] = t
	}
	rules, ok := t[chain]
	if !ok && create {
		t[chain] = []string{}
		f.order[table] = append(f.order[table], chain)
		return t[chain], true
	}
	return rules, ok
}

func builtin(chain string) bool {
	return strings.ToUpper(chain) == chain && !strings.Contains(chain, "-")
}

func notExist(table, chain string) error {
	return fmt.Errorf("iptables: chain %s/%s: %w", table, chain, os.ErrNotExist)
}

func (f *fakeIPT) ChainExists(table, chain string) (bool, error) {
	_, ok := f.chain(table, chain, false)
	return ok, nil
}

func (f *fakeIPT) NewChain(table, chain string) error {
	f.calls++
	if _, ok := f.chain(table, chain, false); ok {
		return fmt.Errorf("chain %s already exists", chain)
	}
	f.chain(table, chain, true)
	return nil
}

func (f *fakeIPT) ClearChain(table, chain string) error {
	f.calls++
	f.chain(table, chain, true)
	f.tables[table][chain] = []string{}
	return nil
}

func (f *fakeIPT) ClearAndDeleteChain(table, chain string) error {
	f.calls++
	if _, ok := f.chain(table, chain, false); !ok {
		return nil
	}
	for c, rules := range f.tables[table] {
		for _, r := range rules {
			if strings.HasSuffix(r, "-j "+chain) {
				return fmt.Errorf("chain %s is referenced from %s", chain, c)
			}
		}
	}
	delete(f.tables[table], chain)
	var kept []string
	for _, c := range f.order[table] {
		if c != chain {
			kept = append(kept, c)
		}
	}
	f.order[table] = kept
	return nil
}

func (f *fakeIPT) Exists(table, chain string, spec ...string) (bool, error) {
	rules, ok := f.chain(table, chain, false)
	if !ok {
		return false, notExist(table, chain)
	}
	want := strings.Join(spec, " ")
	for _, r := range rules {
		if r == want {
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeIPT) Insert(table, chain string, pos int, spec ...string) error {
	f.calls++
	rules, ok := f.chain(table, chain, false)
	if !ok {
		return notExist(table, chain)
	}
	f.tables[table][chain] = append([]string{strings.Join(spec, " ")}, rules...)
	return nil
}

func (f *fakeIPT) Append(table, chain string, spec ...string) error {
	f.calls++
	rules, ok := f.chain(table, chain, false)
	if !ok {
		return notExist(table, chain)
	}
	f.tables[table][chain] = append(rules, strings.Join(spec, " "))
	return nil
}

func (f *fakeIPT) DeleteIfExists(table, chain string, spec ...string) error {
	f.calls++
	rules, ok := f.chain(table, chain, false)
	if !ok {
		return nil
	}
	want := strings.Join(spec, " ")
	for i, r := range rules {
		if r == want {
			f.tables[table][chain] = append(rules[:i:i], rules[i+1:]...)
			return nil
		}
	}
	return nil
}

func (f *fakeIPT) List(table, chain string) ([]string, error) {
	rules, ok := f.chain(table, chain, false)
	if !ok {
		return nil, notExist(table, chain)
	}
	var out []string
	if builtin(chain) {
		out = append(out, "-P "+chain+" ACCEPT")
	} else {
		out = append(out, "-N "+chain)
	}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+quoteComment(r))
	}
	return out, nil
}

// quoteComment renders "--comment a b" as iptables -S does: quoted.
func quoteComment(rule string) string {
	const c = "--comment "
	i := strings.Index(rule, c)
	if i < 0 {
		return rule
	}
	rest := rule[i+len(c):]
	// The comment runs until the next " -" option.
	j := strings.Index(rest, " -")
	if j < 0 {
		j = len(rest)
	}
	comment := rest[:j]
	if strings.Contains(comment, " ") {
		comment = strconv.Quote(comment)
	}
	return rule[:i+len(c)] + comment + rest[j:]
}

// save renders the whole fake like iptables-save, for comparisons.
func (f *fakeIPT) save() string {
	var b strings.Builder
	for _, table := range []string{"filter", "nat"} {
		fmt.Fprintf(&b, "*%s\n", table)
		for _, c := range f.order[table] {
			lines, _ := f.List(table, c)
			for _, l := range lines {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

// fakeSysctl is an in-memory /proc/sys.
type fakeSysctl map[string]string

func (f fakeSysctl) Get(key string) (string, error) {
	v, ok := f[key]
	if !ok {
		return "", os.ErrNotExist
	}
	return v, nil
}

func (f fakeSysctl) Set(key, value string) error {
	if _, ok := f[key]; !ok {
		return os.ErrNotExist
	}
	f[key] = value
	return nil
}
