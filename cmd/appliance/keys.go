package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/wgk3s/wgk3s/configs"
	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"github.com/wgk3s/wgk3s/membership"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func runGenkey(e *env, args []string) error {
	flags := flagSet(e, "genkey")
	out := flags.String("out", "", "write the key to FILE (created 0600; an existing file is not overwritten)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fmt.Errorf("generating a key: %w", err)
	}
	if *out == "" {
		_, err = fmt.Fprintln(e.stdout, k.String())
		return err
	}
	err = atomicfile.CreateSecret(*out, []byte(k.String()+"\n"))
	if errors.Is(err, fs.ErrExist) {
		return usagef("%s already exists; it was left as it is (remove it first to replace it)", *out)
	}
	return err
}

func runPubkey(e *env, args []string) error {
	fs := flagSet(e, "pubkey")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(e.stdin, 4096))
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		// Never echo the input: it is meant to be a secret.
		return usagef("stdin does not hold a WireGuard private key (want the base64 line `appliance genkey` prints)")
	}
	_, err = fmt.Fprintln(e.stdout, k.PublicKey().String())
	return err
}

func runInit(e *env, args []string) error {
	var r membership.InitRequest
	var role string
	fs := flagSet(e, "init")
	fs.StringVar(&r.Name, "name", "", "this node's name (becomes the k3s node name)")
	fs.StringVar(&r.Address, "address", "", "this node's wg0 address, inside the cluster's network")
	fs.StringVar(&r.Endpoint, "endpoint", "", "how the other nodes reach this one: PUBLIC-IP-OR-DNS:PORT (required on the master)")
	fs.StringVar(&r.ExternalIP, "external-ip", "", "this node's public IP, when the endpoint is a DNS name")
	fs.StringVar(&role, "role", string(configs.RoleAgent), "master, server (another k3s server; it fetches the server token over wg0) or agent")
	fs.StringVar(&r.KeyFile, "key-file", configs.DefaultPrivateKeyFile, "the private key file (interface.private_key_file)")
	fs.StringVar(&r.TokenFile, "token-file", configs.DefaultTokenFile, "the k3s server token file (k3s.token_file); created on the master")
	fs.StringVar(&r.AgentTokenFile, "agent-token-file", configs.DefaultAgentTokenFile, "the k3s agent token file (k3s.agent_token_file); created on the master")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	r.Role = configs.Role(role)
	out, err := membership.Init(r)
	if err != nil {
		return err
	}
	if out.KeyCreated {
		fmt.Fprintf(e.stderr, "created %s (0600): this node's private key; keep it here, never copy it\n", r.KeyFile)
	} else {
		fmt.Fprintf(e.stderr, "using the existing key in %s\n", r.KeyFile)
	}
	for _, t := range out.Tokens {
		fmt.Fprintf(e.stderr, "created %s (0600): %s\n", t[0], t[1])
	}
	fmt.Fprintf(e.stderr, "paste this entry under nodes: in the cluster file, then copy the file to every node:\n")
	fmt.Fprint(e.stdout, out.Entry)
	return nil
}
