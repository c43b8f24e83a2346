package configs

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// FieldError is one problem in a cluster file: where it is, what is wrong,
// and what the operator should do about it.
type FieldError struct {
	File    string
	Line    int    // 0 when the problem has no line (a missing section, a file on disk)
	Field   string // the YAML path, e.g. nodes[1].address
	Problem string
	Fix     string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Problem)
	if e.Fix != "" {
		b.WriteString("; fix: ")
		b.WriteString(e.Fix)
	}
	return b.String()
}

// Errors is every problem found in one file, in file order. Callers get all
// of them at once instead of one per run.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual FieldErrors.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// collector gathers FieldErrors for one file and fills in file and line.
type collector struct {
	file  string
	lines *locator
	// skip holds paths whose value had the wrong YAML type; their zero value
	// must not produce a second, misleading "missing" error.
	skip map[string]bool
	errs Errors
}

func (c *collector) add(field, fix, format string, args ...any) {
	if c.skip[field] {
		return
	}
	c.errs = append(c.errs, &FieldError{
		File:    c.file,
		Line:    c.lines.line(field),
		Field:   field,
		Problem: fmt.Sprintf(format, shorten(args)...),
		Fix:     fix,
	})
}

func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	sortByLine(c.errs)
	return c.errs
}

// maxQuoted is how much of a bad value a message quotes: enough to
// recognise it, never a 50 MB line in the log.
const maxQuoted = 64

// quote quotes s for a message, cut to its first maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// short is a value from the file as a message shows it: %q and %s print at
// most its first maxQuoted bytes and its length.
type short string

func (s short) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'q':
		io.WriteString(f, quote(string(s)))
	case len(s) <= maxQuoted:
		io.WriteString(f, string(s))
	default:
		io.WriteString(f, strings.Trim(quote(string(s)), `"`))
	}
}

// shorten wraps the string arguments of a message in short.
func shorten(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if s, ok := a.(string); ok {
			a = short(s)
		}
		out[i] = a
	}
	return out
}
