package firewall

import (
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// TestLegacyInfoSeesARuleDeleted: in a network namespace of its own, the
// summary IPT_SO_GET_INFO gives changes when a legacy rule is added or
// deleted, and stays when nothing changed (so the controller runs no
// iptables-save).
func TestLegacyInfoSeesARuleDeleted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace and raw sockets")
	}
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Skip("iptables-legacy is not installed")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // a fresh namespace for this thread
	if err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	defer func() { netns.Set(orig); ns.Close() }()
	ipt := func(args ...string) {
		t.Helper()
		// The iptables program runs in this thread's namespace: nsenter
		// by the namespace's fd.
		cmd := exec.Command("nsenter", append([]string{"--net=/proc/self/fd/3", "iptables-legacy"}, args...)...)
		cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(ns), "netns")}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("iptables-legacy %v: %v\n%s", args, err, out)
		}
	}
	ipt("-t", "filter", "-N", "WGK3S-T")
	ipt("-t", "nat", "-N", "WGK3S-T")
	ipt("-A", "WGK3S-T", "-p", "udp", "--dport", "5418", "-j", "ACCEPT")
	before, err := legacyInfo(tables)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := legacyInfo(tables); again != before {
		t.Error("the summary changed with nothing changed")
	}
	ipt("-D", "WGK3S-T", "1")
	after, err := legacyInfo(tables)
	if err != nil || after == before {
		t.Errorf("a deleted rule left the summary as it was (%v)", err)
	}
}
