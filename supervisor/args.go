// Package supervisor runs k3s as a child of the appliance: its argv comes
// from the cluster file, it starts once wg0 is up, and it is restarted with
// backoff when it exits.
package supervisor

import (
	"net"
	"strings"

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
	if self.Role.ControlPlane() {
		return serverArgs(cl, self)
	}
	return agentArgs(cl, self)
}

// Etcd timing for links across clouds (10 to 150 ms of round trip): etcd's
// tuning guide puts the heartbeat near the longest round trip and the
// election timeout at ten heartbeats or more. Its defaults (100 ms and
// 1 s) are for one data centre: across clouds they make leader elections
// out of ordinary jitter.
const (
	EtcdHeartbeat = "heartbeat-interval=300"
	EtcdElection  = "election-timeout=3000"
)

// MasterURL is the master's API server through the tunnel.
func MasterURL(cl *configs.Cluster) string {
	return "https://" + net.JoinHostPort(cl.Master().Address.String(), APIPort)
}

// serverArgs: the master, or a server joining it. With servers in the
// file the master starts embedded etcd (--cluster-init; k3s moves a
// sqlite datastore into it at that start) and every server joins it; the
// master alone stays on sqlite.
func serverArgs(cl *configs.Cluster, self configs.Node) []string {
	wgIP := self.Address.String()
	args := []string{"server"}
	if self.Role == configs.RoleServer {
		args = append(args, "--server", MasterURL(cl))
	}
	args = append(args, "--node-ip", wgIP)
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
	args = append(args, "--flannel-iface", cl.Interface.Name, "--node-name", self.Name, "--token-file", cl.K3s.TokenFile)
	// Every server gives k3s the agent token, the master's and a joining
	// server's alike: k3s writes it into server/cred/passwd at each start,
	// and a joined server without it wrote its server token there instead,
	// a copy that differs from etcd's; at its next start k3s refuses it
	// ("passwd newer than datastore"), so a joined server could never
	// restart. A joining server fetches the agent token before k3s starts.
	args = append(args, "--agent-token-file", cl.K3s.AgentTokenFile)
	if len(cl.Servers()) > 1 {
		if self.Role == configs.RoleMaster {
			args = append(args, "--cluster-init")
		}
		for _, kv := range []string{EtcdHeartbeat, EtcdElection} {
			if !setsEtcd(cl.K3s.ServerArgs, kv) {
				args = append(args, "--etcd-arg="+kv)
			}
		}
	}
	return append(args, cl.K3s.ServerArgs...)
}

// setsEtcd reports whether args give --etcd-arg for kv's key themselves.
func setsEtcd(args []string, kv string) bool {
	key, _, _ := strings.Cut(kv, "=")
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--etcd-arg=")
		if !ok && a == "--etcd-arg" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok && strings.HasPrefix(strings.TrimLeft(v, "-"), key+"=") {
			return true
		}
	}
	return false
}

func agentArgs(cl *configs.Cluster, self configs.Node) []string {
	server := MasterURL(cl)
	// An agent holds the agent token only: it joins agents and nothing else.
	args := []string{"agent", "--server", server, "--token-file", cl.K3s.AgentTokenFile, "--node-ip", self.Address.String()}
	if self.ExternalIP.IsValid() {
		args = append(args, "--node-external-ip", self.ExternalIP.String())
	}
	args = append(args, "--flannel-iface", cl.Interface.Name, "--node-name", self.Name)
	return append(args, cl.K3s.AgentArgs...)
}
