package main

import (
	"errors"
	"fmt"

	"github.com/wgk3s/wgk3s/configs"
)

// errNotBuilt says honestly that the run loop does not exist yet.
var errNotBuilt = errors.New("the run loop (tunnel, firewall, k3s supervisor) is not built yet; nothing was changed")

func runAppliance(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "run", "--role master|agent [--config FILE] [--node NAME]")
	nf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := nf.options(true)
	if err != nil {
		return err
	}
	cfg, err := configs.Load(nf.config, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%s: the cluster file is valid for %s (%s)\n", nf.config, cfg.Self.Name, cfg.Self.Role)
	return errNotBuilt
}
