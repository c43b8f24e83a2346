package appliance

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/bounded"
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
