package appliance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/bounded"
	"github.com/wgk3s/wgk3s/membership"
	"github.com/wgk3s/wgk3s/meshsync"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// MasterAnswers returns a check of whether the master of the cluster file
// at path answers this node: one authenticated request of the sync over
// wg0, asked twice, with this node's key (appliance promote).
func MasterAnswers(path string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		cfg, err := configs.Load(path, configs.Options{})
		if err != nil {
			return err
		}
		m := cfg.Cluster.Master()
		c := &meshsync.Client{Master: netip.AddrPortFrom(m.Address, meshsync.DefaultPort), Log: slog.New(slog.DiscardHandler),
			Keys: func() (wgtypes.Key, wgtypes.Key) { return cfg.PrivateKey.Key(), m.PublicKey }}
		for range 2 {
			if err = c.Reach(ctx); err == nil || ctx.Err() != nil {
				return err
			}
		}
		return err
	}
}

// RestartService restarts the wgk3s service when systemd runs this host,
// and says whether it did.
func RestartService() (bool, error) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return false, nil
	}
	return true, bounded.Run(2*time.Minute, "systemctl", "restart", "wgk3s")
}

// RemoveLostNode deletes the lost master's Kubernetes node with this
// server's k3s, so that k3s removes its etcd member (k3s's member
// controller does that for a deleted etcd node) and etcd stops counting
// on it. kubectl is the one on PATH, else k3s's own (`k3s kubectl`).
func RemoveLostNode(k3s, node string) error {
	args := []string{"--kubeconfig", "/etc/rancher/k3s/k3s.yaml", "--request-timeout=20s", "delete", "node", node, "--wait=false", "--ignore-not-found"}
	name := "kubectl"
	if _, err := exec.LookPath(name); err != nil {
		name, args = k3s, append([]string{"kubectl"}, args...)
	}
	return bounded.Run(40*time.Second, name, args...)
}

// Promote makes this server the master when the master does not answer
// it over wg0 (membership.Promote), then finishes the promotion.
func Promote(r membership.PromoteRequest, stdout, stderr io.Writer) error {
	r.MasterAnswers = MasterAnswers(r.Config)
	p, err := membership.Promote(r)
	if err != nil {
		return err
	}
	fmt.Fprint(stderr, p.Notes(r))
	return finishPromote(p, stdout, stderr)
}

// finishPromote does what follows membership.Promote on the promoted
// server: it deletes the lost master's Kubernetes node (RemoveLostNode)
// and restarts the service as the master (RestartService), saying each
// on stderr, and the outcome on stdout.
func finishPromote(p membership.Promoted, stdout, stderr io.Writer) error {
	if err := RemoveLostNode(p.K3s, p.Lost.Name); err != nil {
		fmt.Fprintf(stderr, "could not delete the lost master's node (%v); with a real k3s run: kubectl delete node %s (k3s then removes its etcd member)\n", err, p.Lost.Name)
	} else {
		fmt.Fprintf(stderr, "deleted the Kubernetes node %s: k3s removes its etcd member, so etcd stops counting on it\n", p.Lost.Name)
	}
	if moved, err := setAsideBootstrapFiles(k3sDataDir(p.K3sArgs)); err != nil {
		fmt.Fprintf(stderr, "could not set %s aside (%v): if k3s then stops with \"newer than datastore\", move that file away and restart wgk3s\n", moved, err)
	} else if moved != "" {
		fmt.Fprintf(stderr, "set %s aside (as %s): k3s recreates it from etcd at its start as the master\n", moved, moved+promotedSuffix)
	}
	restarted, err := RestartService()
	switch {
	case err != nil:
		return fmt.Errorf("systemctl restart wgk3s: %w; restart it yourself", err)
	case restarted:
		fmt.Fprintln(stdout, "promoted; wgk3s restarted as the master")
	default:
		fmt.Fprintln(stdout, "promoted; restart the appliance with --role master")
	}
	return nil
}

// promotedSuffix marks a bootstrap file set aside by a promotion.
const promotedSuffix = ".before-promote"

// setAsideBootstrapFiles moves the server's copy of k3s's bootstrap
// credentials (server/cred/passwd) aside before the promoted server's k3s
// starts as the master: a server that joined rewrote it after it took the
// bootstrap data, and k3s, starting without --server for the first time,
// compares it with etcd's copy and stops ("passwd newer than datastore
// and could cause a cluster outage. Remove the file(s) from disk and
// restart to be recreated from datastore", k3s pkg/cluster/bootstrap.go).
// It says which file it moved ("" when there was none).
func setAsideBootstrapFiles(dataDir string) (string, error) {
	passwd := filepath.Join(dataDir, "server", "cred", "passwd")
	if _, err := os.Stat(passwd); err != nil {
		return "", nil
	}
	return passwd, os.Rename(passwd, passwd+promotedSuffix)
}
