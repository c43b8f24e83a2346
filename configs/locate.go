package configs

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// locator maps YAML paths (interface.mtu, nodes[1].address) to the line of
// their value, so that a validation error can point at the line to edit.
type locator struct {
	byPath map[string]int
	// byLine maps a value's line back to its path, for decoder errors that
	// only carry a line.
	byLine map[int]string
	rank   map[int]int
	// collection maps a line and a kind (mapping, sequence) to the path of
	// such a value there: `port: {a: 1}` decoded into an int is about
	// port, not port.a.
	collection map[int]map[yaml.Kind]string
}

func lineRank(path string, n *yaml.Node) int {
	switch {
	case strings.HasSuffix(path, "]"):
		return 2
	case n.Kind == yaml.ScalarNode:
		return 0
	}
	return 1
}

func newLocator(doc *yaml.Node) *locator {
	l := &locator{byPath: map[string]int{}, byLine: map[int]string{}, rank: map[int]int{}, collection: map[int]map[yaml.Kind]string{}}
	if doc != nil && doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		l.walk("", doc.Content[0])
	}
	return l
}

func (l *locator) walk(path string, n *yaml.Node) {
	if path != "" {
		l.byPath[path] = n.Line
		// Several paths can share a line: "- name: a" is nodes[0] and
		// nodes[0].name, "k: [1, 2]" is k, k[0] and k[1], and a mapping
		// starts on its first key's line. A decoder error on that line is
		// about the keyed scalar if there is one, else the keyed collection.
		if r := lineRank(path, n); r < l.rank[n.Line] || l.byLine[n.Line] == "" {
			l.byLine[n.Line], l.rank[n.Line] = path, r
		}
		if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
			if l.collection[n.Line] == nil {
				l.collection[n.Line] = map[yaml.Kind]string{}
			}
			l.collection[n.Line][n.Kind] = path
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if path != "" {
				key = path + "." + key
			}
			l.walk(key, n.Content[i+1])
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			l.walk(fmt.Sprintf("%s[%d]", path, i), item)
		}
	}
}

// line returns the line of path, or of its nearest ancestor that is in the
// file (a missing nodes[1].address points at nodes[1]), or 0.
func (l *locator) line(path string) int {
	if l == nil {
		return 0
	}
	for p := path; p != ""; p = parent(p) {
		if n, ok := l.byPath[p]; ok {
			return n
		}
	}
	return 0
}

func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func sortByLine(es Errors) {
	sort.SliceStable(es, func(i, j int) bool {
		li, lj := es[i].Line, es[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0 // errors without a line go last
		}
		return li < lj
	})
}

// RoleError is a --role that is missing or not a role.
type RoleError struct{ Role string }

func (e *RoleError) Error() string {
	if e.Role == "" {
		return "--role is required: --role master on the master, --role server on the other k3s servers, --role agent on the others"
	}
	return fmt.Sprintf("--role %q: use master, server or agent", e.Role)
}

// OptionsFor checks the --role and --node flags: a role, when given (or
// required), must be master, server or agent.
func OptionsFor(role, node string, required bool) (Options, error) {
	switch Role(role) {
	case RoleMaster, RoleAgent, RoleServer:
	case "":
		if required {
			return Options{}, &RoleError{}
		}
	default:
		return Options{}, &RoleError{Role: role}
	}
	return Options{Role: Role(role), Node: node}, nil
}
