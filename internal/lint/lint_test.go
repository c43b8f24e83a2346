// Package lint holds checks of the source tree that go vet does not make:
// product functions stay short enough to read, and no caller decides by an
// error's text.
package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maxFuncLines is the longest a product function may be.
const maxFuncLines = 80

// exempt are the folders whose code is not the product: the demo, the
// benchmarks, the end-to-end tests and the test tools.
var exempt = []string{"cmd/demo", "cmd/bench", "e2e", "internal/testnet", "internal/realk3s", "internal/vm", "internal/vminit", "internal/k3sstandin", "internal/lint", "rpm/seal"}

// productFiles are the repository's Go files that are product code.
func productFiles(t *testing.T) []string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			for _, e := range exempt {
				if rel == e {
					return filepath.SkipDir
				}
			}
			if strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = filepath.Join(root, f)
	}
	return files
}

// TestNoProductFunctionIsLong: a function over maxFuncLines lines does
// several things; split it where the steps are.
func TestNoProductFunctionIsLong(t *testing.T) {
	fset := token.NewFileSet()
	for _, path := range productFiles(t) {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
			if lines > maxFuncLines {
				t.Errorf("%s: %s is %d lines (at most %d)", fset.Position(fn.Pos()), fn.Name.Name, lines, maxFuncLines)
			}
		}
	}
}

// errorText matches a decision taken on an error's words.
var errorText = regexp.MustCompile(`(strings\.(Contains|HasPrefix|HasSuffix)|==)\s*\(?\s*err\w*\.Error\(\)`)

// TestNoErrorIsMatchedByItsText: rewording a message must not change what
// the code does; callers use errors.Is and errors.As.
func TestNoErrorIsMatchedByItsText(t *testing.T) {
	for _, path := range productFiles(t) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if errorText.MatchString(line) {
				t.Errorf("%s:%d decides by an error's text: %s", path, i+1, strings.TrimSpace(line))
			}
		}
	}
}

// maxMainLines is the most non-test lines cmd/appliance may have: it
// parses flags, handles signals and maps errors to exit codes; the work
// is in the packages.
const maxMainLines = 600

func TestMainIsFlagsSignalsAndExitCodes(t *testing.T) {
	files, err := filepath.Glob("../../cmd/appliance/*.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(data), "\n")
	}
	if lines == 0 || lines >= maxMainLines {
		t.Fatalf("cmd/appliance has %d non-test lines; keep it under %d: move the work into a package and leave main its flags, signals and exit codes", lines, maxMainLines)
	}
}
