//go:build linux

package e2e

import (
	"testing"
	"time"

	"github.com/wgk3s/wgk3s/internal/testnet"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Short names for the harness's paths.
const (
	configPath     = testnet.ConfigPath
	tokenPath      = testnet.TokenPath
	token          = testnet.Token
	agentTokenPath = testnet.AgentTokenPath
	agentToken     = testnet.AgentToken
	standinDir     = testnet.StandinDir
)

type node = testnet.Node

func bins() testnet.Binaries {
	return testnet.Binaries{Appliance: applianceBin, K3s: k3sBin, Mode: mode}
}

func newNode(t *testing.T, srv *testnet.Server, name, role, address string) *node {
	t.Helper()
	return testnet.NewNode(t, srv, bins(), name, role, address)
}

func clusterFile(nodes []*node, edit func(string) string) string {
	return testnet.ClusterFile(nodes, bins(), edit)
}

func pingUntil(t *testing.T, n *node, dst string) {
	t.Helper()
	n.PingUntil(t, dst, 15*time.Second)
}

func wgShow(t *testing.T, srv *testnet.Server, what ...string) string {
	t.Helper()
	return srv.WgShow(what...)
}

func handshake(t *testing.T, srv *testnet.Server, peer wgtypes.Key) string {
	t.Helper()
	return srv.Handshake(peer)
}

// startAll writes the cluster file for nodes on every one of them and starts
// the appliance on each, in order.
func startAll(t *testing.T, nodes []*node) {
	t.Helper()
	for _, n := range nodes {
		n.WriteConfig(nodes, nil)
		n.Start(t)
	}
}
