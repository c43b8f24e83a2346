// Command k3sstandin stands in for k3s in the appliance's tests, where no
// real k3s can be downloaded. It is honest about what it is: it does not
// run Kubernetes; it checks and records how it was started and proves that
// the tunnel carries what k3s needs.
//
//   - `server`: listens on --node-ip:6443 and answers agents that present the
//     agent token: the one in --agent-token-file, else the server token in
//     --token-file (as k3s does: with an agent token set, the server token
//     no longer joins agents).
//     A server started with --server (joining another, as k3s servers join
//     the first one's etcd) first presents the server token there; only
//     the server token admits a server, and the answer carries the agent
//     token it then serves with (k3s's bootstrap data). --cluster-init is
//     recorded in the argv like any flag.
//     With --data-dir it keeps a small SQLite datastore where k3s keeps
//     kine's (datastore.go).
//   - `agent`: dials --server (https://IP:6443) through the tunnel, presents
//     the token from --token-file and keeps the connection open.
//
// Tokens are read as k3s reads them (pkg/clientaccess/token.go): a token
// that starts with K10 must be K10<CA hash>::<user>:<password>, and only the
// password is compared; a bad one makes it exit 1 with k3s's message.
//
// It writes a JSON record of its argv, environment and checks to
// $WGK3S_STANDIN_DIR/k3s-<pid>.json and appends events to events.log there.
// `k3s --version` prints $WGK3S_STANDIN_VERSION (default v1.36.0+k3s1).
// SIGUSR1 makes it crash (exit 3). SIGTERM makes it exit 0, unless
// WGK3S_STANDIN_IGNORE_TERM=1, when it must be killed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Record is what the stand-in writes about itself.
type Record struct {
	PID          int      `json:"pid"`
	PPID         int      `json:"ppid"`
	Role         string   `json:"role"`
	Argv         []string `json:"argv"`
	Env          []string `json:"env"`
	TokenInArgv  bool     `json:"token_in_argv"`
	TokenInEnv   bool     `json:"token_in_env"`
	NotifySocket bool     `json:"notify_socket"`
	Listen       string   `json:"listen,omitempty"`
	Server       string   `json:"server,omitempty"`
}

func main() {
	dir := os.Getenv("WGK3S_STANDIN_DIR")
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-v") {
		// Like k3s; the version a test wants is $WGK3S_STANDIN_VERSION.
		v := os.Getenv("WGK3S_STANDIN_VERSION")
		if v == "" {
			v = "v1.36.0+k3s1"
		}
		fmt.Printf("k3s version %s (standin)\ngo version %s\n", v, "standin")
		return
	}
	if len(os.Args) < 2 {
		fail("usage: k3s server|agent [flags]")
	}
	if os.Args[1] == "datastore" {
		datastoreCommand(os.Args[2:])
		return
	}
	role := os.Args[1]
	flags := parseFlags(os.Args[2:])
	token := readToken(flags["--token-file"])
	agentToken := token
	if f := flags["--agent-token-file"]; f != "" {
		agentToken = readToken(f)
	}
	rec := Record{PID: os.Getpid(), PPID: os.Getppid(), Role: role, Argv: os.Args, Env: os.Environ()}
	for _, a := range os.Args {
		rec.TokenInArgv = rec.TokenInArgv || strings.Contains(a, token) || strings.Contains(a, agentToken)
	}
	for _, kv := range os.Environ() {
		rec.TokenInEnv = rec.TokenInEnv || strings.Contains(kv, token) || strings.Contains(kv, agentToken)
		rec.NotifySocket = rec.NotifySocket || strings.HasPrefix(kv, "NOTIFY_SOCKET=")
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1)
	switch role {
	case "server":
		rec.Listen = net.JoinHostPort(flags["--node-ip"], "6443")
		if master := flags["--server"]; master != "" {
			u, err := url.Parse(master)
			if err != nil || u.Host == "" {
				fail("--server %q is not https://HOST:PORT", master)
			}
			rec.Server = u.Host
			write(dir, rec)
			agentToken = joinServer(u.Host, token, flags["--node-name"], dir)
		}
		if dataDir := flags["--data-dir"]; dataDir != "" {
			db, err := openDatastore(dataDir)
			if err != nil {
				fail("datastore in %s: %v", dataDir, err)
			}
			db.Exec("INSERT OR REPLACE INTO kine VALUES ('/registry/standin/started', ?)", time.Now().String())
			defer db.Close()
		}
		l, err := net.Listen("tcp", rec.Listen)
		if err != nil {
			fail("listen %s: %v", rec.Listen, err)
		}
		write(dir, rec)
		fmt.Printf("standin k3s server %s listening on %s\n", flags["--node-name"], rec.Listen)
		go serve(l, token, agentToken, dir)
	case "agent":
		u, err := url.Parse(flags["--server"])
		if err != nil || u.Host == "" {
			fail("--server %q is not https://HOST:PORT", flags["--server"])
		}
		rec.Server = u.Host
		write(dir, rec)
		go join(u.Host, token, flags["--node-name"], dir)
	default:
		fail("unknown role %q", role)
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGUSR1:
			event(dir, "crash pid=%d", os.Getpid())
			fmt.Fprintln(os.Stderr, "standin k3s: crashing on SIGUSR1")
			os.Exit(3)
		case syscall.SIGTERM:
			if os.Getenv("WGK3S_STANDIN_IGNORE_TERM") == "1" {
				event(dir, "ignored SIGTERM pid=%d", os.Getpid())
				continue
			}
			event(dir, "stop pid=%d", os.Getpid())
			os.Exit(0)
		}
	}
}

// parseFlags reads "--flag value" and "--flag=value" pairs.
func parseFlags(args []string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			m[k] = v
			continue
		}
		if strings.HasPrefix(a, "--") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			m[a] = args[i+1]
			i++
		}
	}
	return m
}

// readToken returns the password of the token in path, read as k3s
// reads it.
func readToken(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("token file: %v", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		fail("token file %s is empty", path)
	}
	pass, ok := password(t)
	if !ok {
		fail("failed to normalize server token; must be in format K10<CA-HASH>::<USERNAME>:<PASSWORD> or <PASSWORD>")
	}
	return pass
}

// password follows k3s's parseToken: a bare password stands for itself;
// K10<hash>::<user>:<password> has a 64-digit (or empty) hash.
func password(t string) (string, bool) {
	if !strings.HasPrefix(t, "K10") {
		return t, true
	}
	hash, creds, ok := strings.Cut(strings.TrimPrefix(t, "K10"), "::")
	if !ok || len(hash) != 0 && len(hash) != 64 {
		return "", false
	}
	_, pass, ok := strings.Cut(creds, ":")
	return pass, ok && pass != ""
}

// serve answers "JOIN <token> <node>" (an agent: the agent token) with OK
// or DENIED, and "SERVER <token> <node>" (a server: the server token only)
// with "OK <agent token>" or DENIED.
func serve(l net.Listener, serverToken, agentToken, dir string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "JOIN" && f[1] == agentToken:
				event(dir, "server accepted %s from %s", f[2], c.RemoteAddr())
				fmt.Printf("standin k3s server: node %s joined from %s\n", f[2], c.RemoteAddr())
				fmt.Fprintln(c, "OK")
			case len(f) == 3 && f[0] == "SERVER" && f[1] == serverToken:
				event(dir, "server accepted server %s from %s", f[2], c.RemoteAddr())
				fmt.Printf("standin k3s server: server %s joined from %s\n", f[2], c.RemoteAddr())
				fmt.Fprintln(c, "OK "+agentToken)
			case len(f) == 3 && f[0] == "SERVER":
				event(dir, "server refused server %s from %s: not the server token", f[2], c.RemoteAddr())
				fmt.Fprintln(c, "DENIED")
				return
			default:
				fmt.Fprintln(c, "DENIED")
				return
			}
			// Hold the connection like a real agent tunnel.
			c.SetReadDeadline(time.Now().Add(time.Hour))
			bufio.NewReader(c).ReadString('\n')
		}()
	}
}

// joinServer dials the server a joining server names until it admits it,
// and returns the agent token it answered with.
func joinServer(server, token, node, dir string) string {
	for {
		c, err := net.DialTimeout("tcp", server, 2*time.Second)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		fmt.Fprintf(c, "SERVER %s %s\n", token, node)
		reply, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if agent, ok := strings.CutPrefix(strings.TrimSpace(reply), "OK "); ok {
			event(dir, "server %s joined %s", node, server)
			fmt.Printf("standin k3s server %s joined %s\n", node, server)
			return agent
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// join dials the server until it answers, then holds the connection.
func join(server, token, node, dir string) {
	for {
		c, err := net.DialTimeout("tcp", server, 2*time.Second)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		fmt.Fprintf(c, "JOIN %s %s\n", token, node)
		reply, _ := bufio.NewReader(c).ReadString('\n')
		if strings.TrimSpace(reply) == "OK" {
			event(dir, "agent %s joined %s", node, server)
			fmt.Printf("standin k3s agent %s joined %s\n", node, server)
			// Block until the server goes away, then rejoin.
			c.SetReadDeadline(time.Time{})
			bufio.NewReader(c).ReadString('\n')
		}
		c.Close()
		time.Sleep(500 * time.Millisecond)
	}
}

func write(dir string, rec Record) {
	if dir == "" {
		return
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	os.WriteFile(filepath.Join(dir, fmt.Sprintf("k3s-%d.json", rec.PID)), b, 0o644)
}

func event(dir, format string, a ...any) {
	if dir == "" {
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, "events.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", a...)
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "standin k3s: "+format+"\n", a...)
	os.Exit(1)
}
