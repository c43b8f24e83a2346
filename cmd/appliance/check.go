package main

import (
	"fmt"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
)

func runCheck(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "check")
	nf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := nf.options(false)
	if err != nil {
		return err
	}
	cfg, err := configs.Load(nf.config, opts)
	if err != nil {
		return err
	}
	p := appliance.NewPlan(cfg, appliance.SystemHost{Root: e.root})
	p.Print(e.stdout)
	if len(p.Problems) > 0 {
		return fmt.Errorf("the cluster file is valid, but this host cannot run it yet: %d problem(s) listed above", len(p.Problems))
	}
	return nil
}
