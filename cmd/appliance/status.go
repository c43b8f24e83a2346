package main

import (
	"encoding/json"
	"time"

	"github.com/wgk3s/wgk3s/status"
)

func runStatus(e *env, args []string) error {
	fs := flagSet(e, "status", "[--json] [--socket PATH]")
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
