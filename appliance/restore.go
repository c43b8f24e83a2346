package appliance

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/snapshot"
	"github.com/wgk3s/wgk3s/status"
	"github.com/wgk3s/wgk3s/supervisor"
)

// RestoreRequest is `appliance restore`'s.
type RestoreRequest struct {
	Config string
	// From is a sealed copy taken from a node by hand; empty: the master
	// asks the nodes at its next start.
	From string
	// Socket is the status socket: restore refuses while an appliance runs.
	Socket string
}

// Restore brings a lone master's datastore back on a new machine that
// has the cluster file, the master's private key and the server token:
// from a copy given (--from), at once; else it marks the master so that
// its next start asks every node for its newest copy and restores the
// newest before k3s starts. It changes nothing when a check fails.
func Restore(r RestoreRequest, stdout, stderr io.Writer) error {
	cfg, err := configs.Load(r.Config, configs.Options{})
	if err != nil {
		return err
	}
	if cfg.Self.Role != configs.RoleMaster {
		return fmt.Errorf("restore brings the master back: this machine's key is %s's in %s, a %s; run it on the master's new machine, with the master's private key in %s",
			cfg.Self.Name, r.Config, cfg.Self.Role, cfg.Cluster.Interface.PrivateKeyFile)
	}
	if running, err := status.Running(r.Socket); err != nil || running {
		if err == nil {
			err = errors.New("an appliance runs on this machine: stop it first (systemctl stop wgk3s); restore changes nothing under a running k3s")
		}
		return err
	}
	sp := planSnapshots(cfg, supervisor.Args(cfg)) // --data-dir, if server_args has it
	if !sp.Take {
		return fmt.Errorf("this cluster keeps no snapshots: %s", sp.Off)
	}
	token, err := configs.ReadToken(sp.TokenFile)
	if err != nil {
		return fmt.Errorf("k3s.token_file: %w; fix: put the server token you kept there (0600), the one the copies are sealed with", err)
	}
	if _, err := os.Stat(sp.Target.Datastore); err == nil {
		return fmt.Errorf("%s: %w; restore is for a new machine: this one has k3s data (move %s away to replace it)", sp.Target.Datastore, snapshot.ErrDatastoreExists, filepath.Dir(filepath.Dir(filepath.Dir(sp.Target.Datastore))))
	}
	if r.From == "" {
		marker := filepath.Join(sp.Store.Dir, restoreMarker)
		if err := os.MkdirAll(sp.Store.Dir, 0o700); err != nil {
			return err
		}
		if err := atomicfile.Secret(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n")); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "restore: at its next start the master asks every node for its newest copy of the datastore,\n"+
			"restores the newest that opens with the token in %s, then starts k3s; the agents reconnect by themselves.\n"+
			"appliance status shows which nodes offered a copy. A node that is down is waited for %s once one copy arrived.\n", sp.TokenFile, restorePatience)
		fmt.Fprintf(stdout, "next: systemctl start wgk3s\n")
		return nil
	}
	sealed, err := os.ReadFile(r.From)
	if err != nil {
		return err
	}
	bundle, info, err := snapshot.Open([]byte(token), sealed)
	if err != nil {
		return fmt.Errorf("%s: %w", r.From, err)
	}
	files, err := snapshot.Unpack(bundle)
	if err != nil {
		return fmt.Errorf("%s: %w", r.From, err)
	}
	if err := snapshot.Restore(files, sp.Target); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "restore: the datastore taken %s (%s ago) is back in %s\n", info.Taken.Format(time.RFC3339), time.Since(info.Taken).Round(time.Second), sp.Target.Datastore)
	fmt.Fprintf(stdout, "next: systemctl start wgk3s\n")
	return nil
}
