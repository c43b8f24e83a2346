package main

import (
	"fmt"
	"time"

	"github.com/wgk3s/wgk3s/appliance"
	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/doctor"
	"github.com/wgk3s/wgk3s/status"
)

// The commands that look: check (the file and this host), and status,
// doctor and ping (the running appliance, over its status socket).

func runCheck(e *env, args []string) error {
	var nf nodeFlags
	fs := flagSet(e, "check")
	nf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := configs.OptionsFor(nf.role, nf.node, false)
	if err != nil {
		return err
	}
	return appliance.Check(e.stdout, nf.config, opts, appliance.SystemHost{Root: e.root})
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
	return status.Write(e.stdout, r, *asJSON, time.Now())
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

func runDoctor(e *env, args []string) error {
	fs := flagSet(e, "doctor")
	asJSON := fs.Bool("json", false, "print the findings as JSON, for scripts")
	sock := fs.String("socket", status.DefaultSocket, "the running appliance's status socket")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r, err := status.Doctor(*sock)
	if err != nil {
		return err
	}
	return doctor.Write(e.stdout, r, *asJSON)
}

func runPing(e *env, args []string) error {
	fs := flagSet(e, "ping")
	count := fs.Int("c", 4, "how many pings, one a second")
	sock := fs.String("socket", status.DefaultSocket, "the running appliance's status socket")
	node, err := parseWithName(fs, args, "NODE, the peer to ping, as the cluster file names it")
	if err != nil {
		return err
	}
	if *count < 1 {
		return usagef("ping: -c must be 1 or more")
	}
	return status.PingEach(*sock, node, *count, func(a doctor.PingAnswer) { fmt.Fprintln(e.stdout, a) })
}
