// Command seal finishes an RPM that nfpm built, for CentOS 7's rpm 4.11:
// it adds the digests rpm 4.11 checks (the header's SHA1, the MD5 of
// header and payload) beside the SHA256 that nfpm writes, and, given an
// OpenPGP key, signs header and payload the way rpm 4.11 can verify (an
// RSA key that signs with its primary key; the signature's creation time
// not marked critical, which rpm 4.11 cannot parse). rpm/build.sh runs it:
//
//	go run ./rpm/seal [--key SECRET-KEY-FILE] FILE.rpm...
//
// The key's passphrase, if any, is read from $NFPM_RPM_PASSPHRASE. Each
// file is rewritten in place.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	keyFile := flag.String("key", "", "an OpenPGP secret key (armored or binary) to sign with; none: unsigned")
	checkKey := flag.String("check-key", "", "only check that this key can sign for rpm 4.11, and exit")
	flag.Parse()
	if *checkKey != "" {
		if _, err := loadSigner(*checkKey, os.Getenv("NFPM_RPM_PASSPHRASE")); err != nil {
			fmt.Fprintln(os.Stderr, "seal:", err)
			os.Exit(2)
		}
		return
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: seal [--key SECRET-KEY-FILE] FILE.rpm...")
		os.Exit(2)
	}
	var s *signer
	if *keyFile != "" {
		var err error
		if s, err = loadSigner(*keyFile, os.Getenv("NFPM_RPM_PASSPHRASE")); err != nil {
			fmt.Fprintln(os.Stderr, "seal:", err)
			os.Exit(2)
		}
	}
	for _, path := range flag.Args() {
		in, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "seal:", err)
			os.Exit(1)
		}
		out, err := Seal(in, s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "seal: %s: %v\n", path, err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, out, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "seal:", err)
			os.Exit(1)
		}
	}
}
