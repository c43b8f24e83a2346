package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/status"
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

func runStatus(e *env, args []string) error {
	fs := flagSet(e, "status")
	asJSON := fs.Bool("json", false, "print the report as JSON, for scripts")
	sock := fs.String("socket", status.DefaultSocket, "the running appliance's status socket")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r, err := status.Fetch(*sock)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	status.Print(e.stdout, r, time.Now())
	return nil
}

// runReload asks the running appliance to re-read its cluster file and
// waits for the result: systemd's ExecReload, so that `systemctl reload`
// says whether the file was taken, and needs no /bin/kill.
func runReload(e *env, args []string) error {
	fs := flagSet(e, "reload")
	sock := fs.String("socket", status.DefaultSocket, "the running appliance's status socket")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := status.Reload(*sock); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "reloaded")
	return nil
}
