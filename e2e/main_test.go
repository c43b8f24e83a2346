// Package e2e runs the real appliance binary in simulated clouds built from
// network namespaces (internal/testnet). The tests need root; elsewhere
// they skip.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// applianceBin is the appliance built once for all tests.
var applianceBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getuid() != 0 {
		return m.Run() // every test skips with the reason
	}
	dir, err := os.MkdirTemp("", "wgk3s-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	applianceBin = filepath.Join(dir, "appliance")
	build := exec.Command("go", "build", "-o", applianceBin, "github.com/wgk3s/wgk3s/cmd/appliance")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the appliance:", err)
		return 1
	}
	return m.Run()
}
