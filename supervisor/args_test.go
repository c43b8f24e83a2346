package supervisor

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wgk3s/wgk3s/configs"
)

func exampleConfig(t *testing.T, self string, edit func(string) string) *configs.Config {
	t.Helper()
	body := string(configs.Example)
	if edit != nil {
		body = edit(body)
	}
	cl, err := configs.Parse([]byte(body), "wgk3s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, ok := cl.NodeByName(self)
	if !ok {
		t.Fatalf("no node %s", self)
	}
	return &configs.Config{Cluster: cl, Self: n}
}

func TestArgsFromExample(t *testing.T) {
	tests := []struct {
		name, self string
		edit       func(string) string
		want       []string
	}{
		{"master", "k3s-master", nil, []string{"server",
			"--node-ip", "192.168.2.1", "--node-external-ip", "203.0.113.10",
			"--advertise-address", "192.168.2.1", "--tls-san", "192.168.2.1", "--tls-san", "203.0.113.10",
			"--flannel-iface", "wg0", "--node-name", "k3s-master", "--token-file", "/etc/wgk3s/token", "--agent-token-file", "/etc/wgk3s/agent-token"}},
		{"agent", "k3s-node-1", nil, []string{"agent",
			"--server", "https://192.168.2.1:6443", "--token-file", "/etc/wgk3s/agent-token",
			"--node-ip", "192.168.2.2", "--node-external-ip", "198.51.100.20",
			"--flannel-iface", "wg0", "--node-name", "k3s-node-1"}},
		{"master advertising external with extra args", "k3s-master", func(s string) string {
			return strings.NewReplacer("advertise: wireguard", "advertise: external",
				"server_args: []", `server_args: ["--disable=traefik", "--tls-san", "k8s.example.net"]`).Replace(s)
		}, []string{"server",
			"--node-ip", "192.168.2.1", "--node-external-ip", "203.0.113.10",
			"--advertise-address", "203.0.113.10", "--tls-san", "192.168.2.1", "--tls-san", "203.0.113.10",
			"--flannel-iface", "wg0", "--node-name", "k3s-master", "--token-file", "/etc/wgk3s/token", "--agent-token-file", "/etc/wgk3s/agent-token",
			"--disable=traefik", "--tls-san", "k8s.example.net"}},
		{"master behind a DNS name", "k3s-master", func(s string) string {
			return strings.NewReplacer("endpoint: 203.0.113.10:5418", "endpoint: master.example.net:5418",
				"    external_ip: 203.0.113.10", "").Replace(s)
		}, []string{"server",
			"--node-ip", "192.168.2.1",
			"--advertise-address", "192.168.2.1", "--tls-san", "192.168.2.1", "--tls-san", "master.example.net",
			"--flannel-iface", "wg0", "--node-name", "k3s-master", "--token-file", "/etc/wgk3s/token", "--agent-token-file", "/etc/wgk3s/agent-token"}},
		{"agent with extra args", "k3s-node-1", func(s string) string {
			return strings.Replace(s, "agent_args: []", `agent_args: ["--node-label=cloud=aliyun"]`, 1)
		}, []string{"agent",
			"--server", "https://192.168.2.1:6443", "--token-file", "/etc/wgk3s/agent-token",
			"--node-ip", "192.168.2.2", "--node-external-ip", "198.51.100.20",
			"--flannel-iface", "wg0", "--node-name", "k3s-node-1", "--node-label=cloud=aliyun"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Args(exampleConfig(t, tt.self, tt.edit))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
		})
	}
}
