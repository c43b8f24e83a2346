package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/firewall"
	"github.com/wgk3s/wgk3s/supervisor"
	"github.com/wgk3s/wgk3s/tunnel"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// clusterOf returns a valid cluster file with n nodes in 10.100.0.0/16.
func clusterOf(b *testing.B, n int) []byte {
	b.Helper()
	var s strings.Builder
	s.WriteString("network: 10.100.0.0/16\nnodes:\n")
	for i := 0; i < n; i++ {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		role := "agent"
		if i == 0 {
			role = "master"
		}
		fmt.Fprintf(&s, "  - name: node-%d\n    role: %s\n    address: 10.100.%d.%d\n    endpoint: node-%d.cloud.test:5418\n    public_key: %q\n",
			i, role, (i+1)/250, (i+1)%250+1, i, k.PublicKey())
	}
	return []byte(s.String())
}

// BenchmarkPlan1000 validates a 1000-node cluster file and plans this
// node's tunnel, firewall and k3s argv: the work a reload does before it
// touches the system.
func BenchmarkPlan1000(b *testing.B) {
	data := clusterOf(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		cl, err := configs.Parse(data, "bench.yaml")
		if err != nil {
			b.Fatal(err)
		}
		cfg := &configs.Config{Cluster: cl, Self: cl.Nodes[1]}
		tc := tunnel.FromCluster(cfg)
		fw := firewall.FromCluster(cl, "eth0")
		argv := supervisor.Args(cfg)
		if len(tc.Peers) != 999 || len(fw.Rules) == 0 || argv[0] != "agent" {
			b.Fatal("wrong plan")
		}
	}
}
