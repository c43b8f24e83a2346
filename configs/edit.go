package configs

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// NewNode is an entry AddNode writes into a cluster file's nodes list.
type NewNode struct {
	Name, Role, Address, Endpoint, PublicKey string
	// Comment, when set, is written after the name as a line comment.
	Comment string
}

// AddNode returns the cluster file data with n appended to its nodes list.
// Only lines are inserted: every other byte of the file (comments, order,
// quoting, blank lines) stays as it was. The node tree locates the list
// and its last entry; the new entry copies that entry's indentation.
func AddNode(data []byte, n NewNode) ([]byte, error) {
	l, err := nodeList(data)
	if err != nil {
		return nil, err
	}
	if i := l.index(n.Name); i >= 0 {
		return nil, fmt.Errorf("nodes: %q is already in the file (line %d); pick another name, or `appliance remove %s` first", n.Name, l.items[i].Line, n.Name)
	}
	last := l.items[len(l.items)-1]
	dash := l.dashColumn(last)
	pad := strings.Repeat(" ", last.Column-1)
	var b strings.Builder
	fmt.Fprintf(&b, "%s- %s%s: %s", strings.Repeat(" ", dash-1), strings.Repeat(" ", last.Column-dash-2), "name", n.Name)
	if n.Comment != "" {
		fmt.Fprintf(&b, "  # %s", n.Comment)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%srole: %s\n%saddress: %s\n", pad, n.Role, pad, n.Address)
	if n.Endpoint != "" {
		// Quoted: an IPv6 endpoint ("[2001:db8::7]:5418") is a YAML flow
		// sequence unquoted.
		fmt.Fprintf(&b, "%sendpoint: %q\n", pad, n.Endpoint)
	}
	fmt.Fprintf(&b, "%spublic_key: %q\n", pad, n.PublicKey)
	end := l.lastLine(len(l.items) - 1)
	return insertAfter(l.lines, end, b.String()), nil
}

// RemoveNode returns the cluster file data without the entry named name,
// and the comment lines right above it that belong to it (at its dash's
// indentation, after another entry). Every other byte stays as it was.
func RemoveNode(data []byte, name string) ([]byte, error) {
	l, err := nodeList(data)
	if err != nil {
		return nil, err
	}
	i := l.index(name)
	if i < 0 {
		return nil, fmt.Errorf("nodes: no node named %q in the file; `appliance status` lists the nodes", name)
	}
	if len(l.items) == 1 {
		return nil, fmt.Errorf("nodes: %q is the only node", name)
	}
	item := l.items[i]
	from, to := item.Line, l.lastLine(i)
	if i > 0 {
		dash := l.dashColumn(item)
		for from > l.lastLine(i-1)+1 {
			prev := l.lines[from-2]
			t := strings.TrimLeft(prev, " ")
			if !strings.HasPrefix(t, "#") || len(prev)-len(t) != dash-1 {
				break
			}
			from--
		}
	}
	out := append([]string{}, l.lines[:from-1]...)
	out = append(out, l.lines[to:]...)
	return []byte(strings.Join(out, "")), nil
}

// list is a cluster file's block-style nodes list.
type list struct {
	lines []string // the file's lines, each with its newline
	doc   *yaml.Node
	seq   *yaml.Node
	items []*yaml.Node // the entries (mappings), in order
	next  int          // the line of the first top-level key after nodes, or len(lines)+1
}

func nodeList(data []byte) (*list, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("the cluster file does not parse: %w", err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the cluster file is not a YAML mapping")
	}
	top := doc.Content[0]
	l := &list{lines: splitLines(data), doc: &doc}
	l.next = len(l.lines) + 1
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		if l.seq != nil {
			l.next = k.Line
			break
		}
		if k.Value == "nodes" {
			l.seq = v
		}
	}
	switch {
	case l.seq == nil:
		return nil, fmt.Errorf("nodes: the cluster file has no nodes list")
	case l.seq.Kind != yaml.SequenceNode || l.seq.Style&yaml.FlowStyle != 0 || len(l.seq.Content) == 0:
		return nil, fmt.Errorf("nodes (line %d): write it as a block list (\"- name: ...\" entries, one key per line) to edit it with this command", l.seq.Line)
	}
	for _, it := range l.seq.Content {
		if it.Kind != yaml.MappingNode || it.Style&yaml.FlowStyle != 0 {
			return nil, fmt.Errorf("nodes (line %d): write every entry as a block mapping (one key per line) to edit the list with this command", it.Line)
		}
		l.items = append(l.items, it)
	}
	return l, nil
}

func splitLines(data []byte) []string {
	var lines []string
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			lines = append(lines, string(data)+"\n")
			break
		}
		lines = append(lines, string(data[:i+1]))
		data = data[i+1:]
	}
	return lines
}

func (l *list) index(name string) int {
	for i, it := range l.items {
		if itemName(it) == name {
			return i
		}
	}
	return -1
}

// dashColumn is the 1-based column of the "-" that starts an entry.
func (l *list) dashColumn(it *yaml.Node) int {
	line := l.lines[it.Line-1]
	if i := strings.LastIndex(line[:min(it.Column-1, len(line))], "-"); i >= 0 {
		return i + 1
	}
	return it.Column - 2
}

// lastLine is the last line of entry i: its last value's line, then the
// comment lines under it indented past its dash (a value's comment that
// runs on), never past the next entry or the next top-level key.
func (l *list) lastLine(i int) int {
	it := l.items[i]
	end := deepest(it)
	limit := l.next - 1
	if i+1 < len(l.items) {
		limit = l.items[i+1].Line - 1
	}
	dash := l.dashColumn(it)
	for end < limit {
		line := l.lines[end] // the line after end (0-based index end)
		t := strings.TrimLeft(line, " ")
		if !strings.HasPrefix(t, "#") || len(line)-len(t) < dash {
			break
		}
		end++
	}
	return end
}

// deepest is the last line any node under n starts on (a block scalar's
// further lines are not in use in a cluster file).
func deepest(n *yaml.Node) int {
	end := n.Line
	for _, c := range n.Content {
		end = max(end, deepest(c))
	}
	return end
}

// insertAfter inserts text after line n (1-based; 0 is the start).
func insertAfter(lines []string, n int, text string) []byte {
	var b strings.Builder
	for _, s := range lines[:n] {
		b.WriteString(s)
	}
	b.WriteString(text)
	for _, s := range lines[n:] {
		b.WriteString(s)
	}
	return []byte(b.String())
}

// Excerpt returns the cluster file's settings with only the named nodes'
// entries and no comments: the file a new node starts from before its
// first sync hands it the master's.
func Excerpt(data []byte, names ...string) ([]byte, error) {
	l, err := nodeList(data)
	if err != nil {
		return nil, err
	}
	var kept []*yaml.Node
	for _, name := range names {
		i := l.index(name)
		if i < 0 {
			return nil, fmt.Errorf("nodes: no node named %q in the file", name)
		}
		kept = append(kept, l.items[i])
	}
	l.seq.Content = kept
	uncomment(l.doc)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(l.doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func itemName(it *yaml.Node) string {
	for j := 0; j+1 < len(it.Content); j += 2 {
		if it.Content[j].Value == "name" {
			return it.Content[j+1].Value
		}
	}
	return ""
}

func uncomment(n *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		uncomment(c)
	}
}

// SetNodeKey returns the cluster file data with the public_key of the
// entry named name replaced by key, in place: the rest of its line (quotes,
// comment) and of the file stays as it was.
func SetNodeKey(data []byte, name, key string) ([]byte, error) {
	return setNodeField(data, name, "public_key", key)
}

// SetNodeRole returns data with the role of the node named name set to
// role (appliance promote), the one value changed in place.
func SetNodeRole(data []byte, name, role string) ([]byte, error) {
	return setNodeField(data, name, "role", role)
}

// setNodeField replaces the value of field in the node's entry, where it
// is written on one line; every other byte stays as it was.
func setNodeField(data []byte, name, field, value string) ([]byte, error) {
	l, err := nodeList(data)
	if err != nil {
		return nil, err
	}
	i := l.index(name)
	if i < 0 {
		return nil, fmt.Errorf("nodes: no node named %q in the file", name)
	}
	it := l.items[i]
	for j := 0; j+1 < len(it.Content); j += 2 {
		k, v := it.Content[j], it.Content[j+1]
		if k.Value != field || v.Kind != yaml.ScalarNode || v.Value == "" {
			continue
		}
		line := l.lines[v.Line-1]
		at := strings.Index(line[min(v.Column-1, len(line)):], v.Value)
		if at < 0 {
			break
		}
		at += v.Column - 1
		l.lines[v.Line-1] = line[:at] + value + line[at+len(v.Value):]
		return []byte(strings.Join(l.lines, "")), nil
	}
	return nil, fmt.Errorf("nodes[%d] (%s, line %d): no %s written on one line", i, name, it.Line, field)
}
