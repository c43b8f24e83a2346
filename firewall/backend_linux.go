package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/wgk3s/wgk3s/internal/bounded"
)

// CleanUpAll removes the appliance's chains and jumps from every iptables
// backend installed and restores the saved sysctls: `appliance cleanup`
// cannot know which backend a crashed run used.
func CleanUpAll() error {
	var errs []error
	for _, backend := range []string{BackendLegacy, BackendNFT} {
		fw, err := New(Options{Backend: backend})
		if err != nil {
			continue // that backend is not installed
		}
		if has, err := fw.HasRules(); err == nil && !has {
			// Nothing of ours; the saved sysctls may still be there.
			if err := fw.sysctls.restore(); err != nil {
				errs = append(errs, fmt.Errorf("restoring sysctls: %w", err))
			}
			continue
		}
		if err := fw.CleanUp(); err != nil {
			errs = append(errs, fmt.Errorf("iptables-%s: %w", backend, err))
		}
	}
	return errors.Join(errs...)
}

// New returns a Controller on the iptables backend in use.
func New(opts Options) (*Controller, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.StateDir == "" {
		opts.StateDir = "/run/wgk3s"
	}
	if opts.ReconcilePeriod == 0 {
		opts.ReconcilePeriod = 5 * time.Second
	}
	path, backend, err := DetectBackend(opts.Backend)
	if err != nil {
		return nil, err
	}
	ipt, err := iptables.New(iptables.Path(path), iptables.Timeout(10))
	if err != nil {
		return nil, fmt.Errorf("using %s: %w", path, err)
	}
	c := newController(ipt, saveCommand(path+"-save"), procSys{"/proc/sys"}, opts, backend)
	switch backend {
	case BackendNFT:
		c.watch = watchNFTables
	case BackendLegacy:
		c.watch = watchLegacy
	}
	return c, nil
}

// saveCommand runs iptables-save (every table), bounded in time.
func saveCommand(save string) saver {
	return func() (string, error) {
		out, err := bounded.Output(10*time.Second, nil, save)
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) && len(ee.Stderr) > 0 {
				return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
			}
			return "", err
		}
		return string(out), nil
	}
}

// DetectBackend returns the iptables command to use and its backend. With
// want auto: when both iptables-legacy and iptables-nft exist, the one that
// already holds more rules is the one in use (the approach of Kubernetes'
// iptables-wrapper); otherwise the plain iptables command and its mode.
func DetectBackend(want string) (path, backend string, err error) {
	switch want {
	case BackendLegacy, BackendNFT:
		if p, err := exec.LookPath("iptables-" + want); err == nil {
			return p, want, nil
		}
		p, mode, err := plainIptables()
		if err != nil {
			return "", "", err
		}
		if mode != want {
			return "", "", fmt.Errorf("firewall.backend is %s, but %s is %s and there is no iptables-%s; fix: install it or use backend auto", want, p, mode, want)
		}
		return p, mode, nil
	case "", BackendAuto:
	default:
		return "", "", fmt.Errorf("firewall.backend %q: use auto, legacy or nft", want)
	}
	legacy, errL := exec.LookPath("iptables-legacy")
	nft, errN := exec.LookPath("iptables-nft")
	if errL == nil && errN == nil {
		nl, nn := countRules(legacy+"-save"), countRules(nft+"-save")
		switch {
		case nl > nn:
			return legacy, BackendLegacy, nil
		case nn > nl:
			return nft, BackendNFT, nil
		}
	}
	return plainIptables()
}

func plainIptables() (string, string, error) {
	p, err := exec.LookPath("iptables")
	if err != nil {
		return "", "", fmt.Errorf("iptables not found: %w; fix: install the iptables package", err)
	}
	out, err := bounded.Output(10*time.Second, nil, p, "--version")
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %w", p, err)
	}
	if strings.Contains(string(out), "nf_tables") {
		return p, BackendNFT, nil
	}
	return p, BackendLegacy, nil
}

// countRules counts the rules an iptables-save command prints (0 if it fails).
func countRules(save string) int {
	out, err := bounded.Output(10*time.Second, nil, save)
	if err != nil {
		return 0
	}
	return strings.Count(string(out), "\n-A ")
}
