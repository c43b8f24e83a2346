// Package tunnel owns the WireGuard interface: it chooses kernel WireGuard or
// the embedded wireguard-go, brings the link up with its address, MTU and
// routes, and keeps the peers equal to the cluster file.
package tunnel

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
)

// KernelMinimum is the first kernel release whose WireGuard module this
// appliance uses. WireGuard entered Linux in 5.6, but the distributions this
// product targets (CentOS 7 with elrepo) are known-good from 5.15 on, which is
// what the manual procedure upgraded to.
var KernelMinimum = KernelVersion{5, 15, 0}

// KernelVersion is the numeric part of a kernel release string.
type KernelVersion struct{ Major, Minor, Patch int }

func (v KernelVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less reports whether v is older than w.
func (v KernelVersion) Less(w KernelVersion) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// ParseRelease reads the version out of a `uname -r` string such as
// 3.10.0-1160.el7.x86_64, 5.15.2-1.el7.elrepo.x86_64 or 5.4.0-150-generic.
func ParseRelease(release string) (KernelVersion, error) {
	num := release
	if i := strings.IndexAny(num, "-+_ "); i >= 0 {
		num = num[:i]
	}
	parts := strings.SplitN(num, ".", 4)
	if len(parts) < 2 {
		return KernelVersion{}, fmt.Errorf("kernel release %q: want MAJOR.MINOR[.PATCH]", release)
	}
	var v [3]int
	for i := 0; i < 3 && i < len(parts); i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil || n < 0 {
			return KernelVersion{}, fmt.Errorf("kernel release %q: %q is not a number", release, parts[i])
		}
		v[i] = n
	}
	return KernelVersion{v[0], v[1], v[2]}, nil
}

// Choice is the WireGuard implementation picked for this host, and why.
type Choice struct {
	Mode   configs.Mode // ModeKernel or ModeUserspace
	Reason string
}

// ErrKernelUnavailable is returned, wrapped, when mode kernel is forced on a
// host that cannot run kernel WireGuard.
var ErrKernelUnavailable = errors.New("kernel WireGuard is not available")

// Choose decides between kernel WireGuard and wireguard-go. kernelUsable is
// asked only when the release is new enough; it says why kernel WireGuard
// cannot be used, or nil if it can (at run time it creates the link; for
// `appliance check` it only looks for the module).
func Choose(want configs.Mode, release string, kernelUsable func() error) (Choice, error) {
	if want == configs.ModeUserspace {
		return Choice{configs.ModeUserspace, "interface.mode is userspace"}, nil
	}
	why := kernelUnusable(release, kernelUsable)
	if why == "" {
		reason := fmt.Sprintf("kernel %s is %s or later and has the WireGuard module", release, KernelMinimum)
		if want == configs.ModeKernel {
			reason = "interface.mode is kernel"
		}
		return Choice{configs.ModeKernel, reason}, nil
	}
	if want == configs.ModeKernel {
		return Choice{}, fmt.Errorf("interface.mode is kernel, but %s: %w; fix: set interface.mode to auto or userspace", why, ErrKernelUnavailable)
	}
	return Choice{configs.ModeUserspace, why + ", so the embedded wireguard-go runs on a TUN device"}, nil
}

// kernelUnusable returns why kernel WireGuard cannot be used, or "".
func kernelUnusable(release string, kernelUsable func() error) string {
	v, err := ParseRelease(release)
	if err != nil {
		return err.Error()
	}
	if v.Less(KernelMinimum) {
		return fmt.Sprintf("kernel %s is older than %s", release, KernelMinimum)
	}
	if err := kernelUsable(); err != nil {
		return fmt.Sprintf("kernel %s is new enough but %v", release, err)
	}
	return ""
}
