package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/wgk3s/wgk3s/internal/atomicfile"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func runGenkey(e *env, args []string) error {
	fs := flagSet(e, "genkey")
	out := fs.String("out", "", "write the key to FILE (created 0600; an existing file is not overwritten)")
	if err := parseFlags(fs, args); err != nil {
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
	return writeSecret(*out, k.String()+"\n")
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

// writeSecret creates path with mode 0600 (its directory 0700 if missing)
// and never overwrites an existing file.
func writeSecret(path, contents string) error {
	err := atomicfile.CreateSecret(path, []byte(contents))
	if errors.Is(err, fs.ErrExist) {
		return usagef("%s already exists; it was left as it is (remove it first to replace it)", path)
	}
	return err
}
