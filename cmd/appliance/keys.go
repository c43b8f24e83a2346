package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func runGenkey(e *env, args []string) error {
	fs := flagSet(e, "genkey", "[--out FILE]")
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
	fs := flagSet(e, "pubkey", "< private.key")
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
// and never overwrites an existing file. The mode is set at creation, so the
// secret is never readable by others, whatever the umask.
func writeSecret(path, contents string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return usagef("%s already exists; it was left as it is (remove it first to replace it)", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(contents); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
