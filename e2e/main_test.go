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

// applianceBin is the appliance, k3sBin the stand-in k3s (or a real k3s
// from $WGK3S_K3S_BINARY), built once for all tests.
var applianceBin, k3sBin string

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
	k3sBin = filepath.Join(dir, "k3s")
	for bin, pkg := range map[string]string{applianceBin: "cmd/appliance", k3sBin: "internal/k3sstandin"} {
		build := exec.Command("go", "build", "-o", bin, "github.com/wgk3s/wgk3s/"+pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", pkg+":", err)
			return 1
		}
	}
	return m.Run()
}
