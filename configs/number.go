package configs

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// wholeNumber is an integer field of the file. yaml.v3 would decode 12.5
// into an int as 12 (and 128.9 as 128), silently; this type takes a YAML
// integer only and reports anything else as a decode error, which parse
// turns into "... is not a whole number" for that field alone.
type wholeNumber int

// UnmarshalYAML implements yaml.Unmarshaler.
func (w *wholeNumber) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		v, err := strconv.ParseInt(n.Value, 0, 64)
		if err == nil && v == int64(int(v)) {
			*w = wholeNumber(v)
			return nil
		}
	}
	msg := fmt.Sprintf("line %d: cannot unmarshal %s into int", n.Line, n.ShortTag())
	if n.Kind == yaml.ScalarNode {
		msg = fmt.Sprintf("line %d: cannot unmarshal %s `%s` into int", n.Line, n.ShortTag(), n.Value)
	}
	return &yaml.TypeError{Errors: []string{msg}}
}
