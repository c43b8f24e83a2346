package configs

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Parse decodes and validates a cluster file's contents. It reads no other
// file and changes nothing; file is used in messages only. The error, when
// not nil, is an Errors holding every problem found.
func Parse(data []byte, file string) (*Cluster, error) {
	cl, c := parse(data, file)
	if err := c.err(); err != nil {
		return nil, err
	}
	return cl, nil
}

// parse returns the cluster as far as it could be read (nil when the YAML
// itself is broken) and the collector holding every problem, so that Load
// can add its own findings to the same report.
func parse(data []byte, file string) (*Cluster, *collector) {
	c := &collector{file: file, skip: map[string]bool{}}
	if len(bytes.TrimSpace(data)) == 0 {
		c.add("", "copy /usr/share/doc/wgk3s/wgk3s.yaml or run `appliance init` and fill in the nodes", "the file is empty")
		return nil, c
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		c.errs = append(c.errs, syntaxError(file, data, err))
		return nil, c
	}
	c.lines = newLocator(&doc)
	if len(doc.Content) != 1 {
		c.add("", "copy /usr/share/doc/wgk3s/wgk3s.yaml or run `appliance init` and fill in the nodes", "the file holds no YAML document (only comments?)")
		return nil, c
	}
	if doc.Content[0].Kind != yaml.MappingNode {
		c.add("", "the file must be a mapping with network, interface, nodes, firewall and k3s keys", "the top level is not a mapping of keys")
		return nil, c
	}

	// One parse: unknown keys are found on the node tree (strict mode),
	// then the tree is decoded; type errors come back per field.
	checkKnownKeys(doc.Content[0], reflect.TypeFor[raw](), "", c)
	var r raw
	if err := doc.Decode(&r); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			c.errs = append(c.errs, syntaxError(file, data, err))
			return nil, c
		}
		for _, msg := range te.Errors {
			c.typeError(msg)
		}
		// yaml.v3 leaves the whole mapping undecoded when a key in it is
		// duplicated: validating that empty mapping would add "missing"
		// and "does not exist" errors that are not true. The duplicate is
		// the problem to fix; report it alone.
		if slices.ContainsFunc(te.Errors, func(m string) bool { return strings.Contains(m, "already defined at line") }) {
			return nil, c
		}
	}
	cl := validate(&r, c)
	cl.File = file
	cl.Data = data
	cl.lines = c.lines
	return cl, c
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func syntaxError(file string, data []byte, err error) *FieldError {
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		return &FieldError{File: file, Problem: "not a text file (it holds bytes that are not UTF-8 text)",
			Fix: "give the path of the cluster file (YAML text), such as " + DefaultPath}
	}
	msg := err.Error()
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	return &FieldError{File: file, Line: line, Problem: "not valid YAML: " + msg,
		Fix: "check the indentation (spaces, not tabs) and quoting on that line"}
}

var mismatchRE = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")

// typeError turns one of yaml.v3's per-field decode messages into a
// FieldError that names the field and the fix.
func (c *collector) typeError(msg string) {
	line := 0
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	path := c.lines.byLine[line]
	m := mismatchRE.FindStringSubmatch(msg)
	if m != nil && (m[1] == "!!map" || m[1] == "!!seq") {
		kind := map[string]yaml.Kind{"!!map": yaml.MappingNode, "!!seq": yaml.SequenceNode}[m[1]]
		if p, ok := c.lines.collection[line][kind]; ok {
			path = p
		}
	}
	fe := &FieldError{File: c.file, Line: line, Field: path, Problem: msg}
	if m != nil {
		want := describeGoType(m[3])
		got := m[2]
		if got == "" {
			got = yamlTagName(m[1])
		} else {
			got = strconv.Quote(got)
		}
		fe.Problem = fmt.Sprintf("%s is not %s", got, want)
		fe.Fix = "write " + want + " here"
		c.skip[path] = true
	}
	c.errs = append(c.errs, fe)
}

// checkKnownKeys reports every mapping key under n that the struct type t
// (the raw schema) has no field for, recursing into nested sections and
// lists of them.
func checkKnownKeys(n *yaml.Node, t reflect.Type, path string, c *collector) {
	switch {
	case t.Kind() == reflect.Pointer:
		checkKnownKeys(n, t.Elem(), path, c)
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			checkKnownKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), c)
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			fields[strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]] = t.Field(i).Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			sub := key.Value
			if path != "" {
				sub = path + "." + key.Value
			}
			ft, ok := fields[key.Value]
			if !ok {
				c.errs = append(c.errs, &FieldError{File: c.file, Line: key.Line, Field: sub,
					Problem: fmt.Sprintf("unknown key %s", quote(key.Value)),
					Fix:     "remove it or correct its spelling; the keys allowed here are " + strings.Join(knownKeys(t), ", ")})
				continue
			}
			checkKnownKeys(n.Content[i+1], ft, sub, c)
		}
	}
}

func knownKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0])
	}
	return keys
}

func describeGoType(t string) string {
	switch {
	case t == "int":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a single value (quote it)"
	case t == "[]string":
		return "a list of strings"
	case t == "[]configs.rawNode":
		return "a list of node entries"
	case strings.HasPrefix(t, "configs.raw"):
		return "a mapping of keys"
	}
	return t
}

func yamlTagName(tag string) string {
	switch tag {
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	}
	return "a " + strings.TrimPrefix(tag, "!!")
}
