//go:build linux

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgk3s/wgk3s/internal/testnet"
)

// TestTheDemoRuns: `make demo` is the README's first command; it runs
// here with the stand-in k3s, so that a change that breaks it (a log line
// it waits for, a step it narrates) fails `make test`.
func TestTheDemoRuns(t *testing.T) {
	testnet.Requirements(t, "wg")
	if mode != "userspace" {
		t.Skip("the demo runs the cluster file's mode (auto); once per suite")
	}
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "github.com/wgk3s/wgk3s/cmd/demo").CombinedOutput(); err != nil {
		t.Skipf("cannot build the demo here (the kernel VM has no Go): %v\n%s", err, out)
	}
	cmd := exec.Command(demo, "--appliance", applianceBin, "--k3s-standin", k3sBin)
	cmd.Env = append(os.Environ(), "WGK3S_K3S_BINARY=")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nothing left behind") {
		t.Fatalf("the demo: %v\n%s", err, out)
	}
}
