package membership

import (
	"context"
	"fmt"
	"time"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
)

// PromoteRequest is what `appliance promote` is given, on a server, when
// the master's machine is lost for good.
type PromoteRequest struct {
	// Config is this server's cluster file; EnvFile the unit's
	// environment file, whose ROLE= becomes master.
	Config, EnvFile string
	// Force promotes though the master still answers.
	Force bool
	// MasterAnswers says whether the master answers this node (nil: it
	// does); the sync's authenticated request over wg0.
	MasterAnswers func(ctx context.Context) error
}

// Promoted is what promote changed.
type Promoted struct {
	Self, Lost configs.Node
	// K3s is this node's k3s binary (the file's k3s.binary); K3sArgs
	// the extra arguments the file gives its server (its --data-dir).
	K3s     string
	K3sArgs []string
}

// Promote makes this server the master: in its file its role becomes
// master and the lost master's entry goes; ROLE=master in the unit's
// environment file. It refuses while the master still answers, unless
// Force: two masters would each edit and hand round their own file. The
// running appliance must restart (as master) to take it; the other nodes
// then take the file from it, as they take a server's while the master is
// away, and follow it as their master.
func Promote(r PromoteRequest) (Promoted, error) {
	data, err := configs.ReadFile(r.Config)
	if err != nil {
		return Promoted{}, &BadRequest{Flag: "--config", Problem: fmt.Sprintf("reading %s: %v", r.Config, err), Fix: "pass --config with this server's cluster file"}
	}
	cfg, err := configs.LoadData(data, r.Config, configs.Options{})
	if err != nil {
		return Promoted{}, err
	}
	if cfg.Self.Role != configs.RoleServer {
		return Promoted{}, &BadRequest{Problem: fmt.Sprintf("this node (%s) is %s in %s; only a server (role: server, a k3s server in etcd) can become the master", cfg.Self.Name, cfg.Self.Role, r.Config),
			Fix: "run promote on a server; a cluster without servers is brought back with `appliance restore` on a new machine"}
	}
	lost := cfg.Cluster.Master()
	if !r.Force && r.MasterAnswers != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
		answered := r.MasterAnswers(ctx)
		cancel()
		if answered == nil {
			return Promoted{}, &BadRequest{Flag: "--force", Problem: fmt.Sprintf("the master %s still answers this node over wg0: promoting now makes two masters, each editing and handing round its own file (every node would follow whichever answered it), and k3s would have two etcd members that think they lead the edits", lost.Name),
				Fix: "promote only when the master's machine is lost for good; if it only looks lost from here (a network cut), pass --force knowing the risk, and never start the old master again"}
		}
	}
	next, err := configs.SetNodeRole(data, cfg.Self.Name, string(configs.RoleMaster))
	if err == nil {
		next, err = configs.RemoveNode(next, lost.Name)
	}
	if err != nil {
		return Promoted{}, err
	}
	if _, err := configs.LoadData(next, r.Config+" (promoted)", configs.Options{Role: configs.RoleMaster}); err != nil {
		return Promoted{}, fmt.Errorf("the file with this node as the master does not validate: %w", err)
	}
	if err := atomicfile.Replace(r.Config+".previous", data); err != nil {
		return Promoted{}, err
	}
	if err := atomicfile.Replace(r.Config, next); err != nil {
		return Promoted{}, err
	}
	if err := writeRole(r.EnvFile, string(configs.RoleMaster), true); err != nil {
		return Promoted{}, fmt.Errorf("%s is written (the previous one kept as .previous), but %w", r.Config, err)
	}
	return Promoted{Self: cfg.Self, Lost: lost, K3s: cfg.Cluster.K3s.Binary, K3sArgs: cfg.Cluster.K3s.ServerArgs}, nil
}

// Notes are the lines `appliance promote` prints.
func (p Promoted) Notes(r PromoteRequest) string {
	return fmt.Sprintf("%s is the master now in %s (role: master; %s's entry removed; the previous file kept as %s.previous) and ROLE=master in %s\n"+
		"the appliance must restart as the master to take it; the other nodes then take the file from it and follow it\n",
		p.Self.Name, r.Config, p.Lost.Name, r.Config, r.EnvFile)
}
