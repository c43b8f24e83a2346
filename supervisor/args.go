// Package supervisor runs k3s as a child of the appliance: its argv comes
// from the cluster file, it starts once wg0 is up, and it is restarted with
// backoff when it exits.
package supervisor

import (
	"net"

	"github.com/wgk3s/wgk3s/configs"
)

// APIPort is the k3s supervisor and API server port agents join through.
const APIPort = "6443"

// Args returns the k3s argv (without the binary) for this node: `server` on
// the master, `agent` elsewhere, pinned to the wg0 address with flannel on
// wg0, then the file's server_args or agent_args. The tokens are passed as
// file paths only, never as values: the master's k3s reads the server token
// and the agent token, an agent's the agent token.
func Args(cfg *configs.Config) []string {
	cl, self := cfg.Cluster, cfg.Self
	if self.Role == configs.RoleMaster {
		return serverArgs(cl, self)
	}
	return agentArgs(cl, self)
}

func serverArgs(cl *configs.Cluster, self configs.Node) []string {
	wgIP := self.Address.String()
	args := []string{"server", "--node-ip", wgIP}
	if self.ExternalIP.IsValid() {
		args = append(args, "--node-external-ip", self.ExternalIP.String())
	}
	advertise := wgIP
	if cl.K3s.Advertise == configs.AdvertiseExternal {
		advertise = self.ExternalIP.String()
	}
	args = append(args, "--advertise-address", advertise, "--tls-san", wgIP)
	// kubectl from outside reaches the API server by the public address or
	// name, so the certificate must name it too.
	switch {
	case self.ExternalIP.IsValid():
		args = append(args, "--tls-san", self.ExternalIP.String())
	case self.Endpoint.Host != "":
		args = append(args, "--tls-san", self.Endpoint.Host)
	}
	args = append(args, "--flannel-iface", cl.Interface.Name, "--node-name", self.Name,
		"--token-file", cl.K3s.TokenFile, "--agent-token-file", cl.K3s.AgentTokenFile)
	return append(args, cl.K3s.ServerArgs...)
}

func agentArgs(cl *configs.Cluster, self configs.Node) []string {
	server := "https://" + net.JoinHostPort(cl.Master().Address.String(), APIPort)
	// An agent holds the agent token only: it joins agents and nothing else.
	args := []string{"agent", "--server", server, "--token-file", cl.K3s.AgentTokenFile, "--node-ip", self.Address.String()}
	if self.ExternalIP.IsValid() {
		args = append(args, "--node-external-ip", self.ExternalIP.String())
	}
	args = append(args, "--flannel-iface", cl.Interface.Name, "--node-name", self.Name)
	return append(args, cl.K3s.AgentArgs...)
}
