//go:build linux

// Package e2e runs the real appliance binary in simulated clouds built from
// network namespaces (internal/testnet). The tests need root; elsewhere
// they skip.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// applianceBin is the appliance, k3sBin the stand-in k3s (or a real k3s
// from $WGK3S_K3S_BINARY), built once for all tests.
var applianceBin, k3sBin string

// mode is the interface.mode every cluster file of the current pass names:
// the suite runs once per WireGuard mode this host supports.
var mode = "userspace"

// prebuilt names, per package, the environment variable that can point at
// a prebuilt binary instead of building it.
var prebuilt = map[string]string{"cmd/appliance": "WGK3S_E2E_APPLIANCE", "internal/k3sstandin": "WGK3S_E2E_K3S"}

// TestMain builds the binaries and runs the suite once per WireGuard mode
// the host supports; $WGK3S_E2E_MODES (a comma-separated list) narrows
// that, and $WGK3S_E2E_APPLIANCE and $WGK3S_E2E_K3S name prebuilt binaries.
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
	for bin, pkg := range map[*string]string{&applianceBin: "cmd/appliance", &k3sBin: "internal/k3sstandin"} {
		// Prebuilt binaries: the kernel VM (e2e/kernelvm) has no Go.
		if pre := os.Getenv(prebuilt[pkg]); pre != "" {
			*bin = pre
			continue
		}
		build := exec.Command("go", "build", "-o", *bin, "github.com/wgk3s/wgk3s/"+pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building", pkg+":", err)
			return 1
		}
	}
	code := 0
	modes := []string{"userspace", "kernel"}
	if only := os.Getenv("WGK3S_E2E_MODES"); only != "" {
		modes = strings.Split(only, ",")
	}
	for _, md := range modes {
		if why := modeUnsupported(md); why != "" {
			fmt.Printf("=== e2e: interface.mode %s skipped: %s\n", md, why)
			continue
		}
		mode = md
		fmt.Printf("=== e2e: the suite with interface.mode %s\n", md)
		if c := m.Run(); c != 0 {
			fmt.Printf("=== e2e: FAILED with interface.mode %s\n", md)
			code = c
		}
	}
	return code
}

// modeUnsupported says why this host cannot run WireGuard mode md, or "".
func modeUnsupported(md string) string {
	if md == "userspace" {
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			return "no /dev/net/tun"
		}
		return ""
	}
	return testnet.KernelWireGuardMissing()
}
