#!/usr/bin/env bash
# Builds the static appliance and packages it: rpm/build.sh rpm|deb OUTDIR.
# VERSION (default from git) must be an RPM-safe version: digits and dots.
set -euo pipefail
cd "$(dirname "$0")/.."
format=${1:?usage: rpm/build.sh rpm|deb OUTDIR}
out=${2:?usage: rpm/build.sh rpm|deb OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -z "${VERSION:-}" ]; then
  VERSION=$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//' || true)
  VERSION=${VERSION:-0.1.0}
fi
export VERSION
export RELEASE=${RELEASE:-1}
export APPLIANCE_BIN="$out/appliance"
# RPM_SIGNING_KEY: sign the RPM with this OpenPGP secret key (the
# passphrase, if the key has one, in NFPM_RPM_PASSPHRASE). The .deb is
# never signed: apt repositories sign their Release file instead.
export RPM_SIGNING_KEY=${RPM_SIGNING_KEY:-}
if [ -n "$RPM_SIGNING_KEY" ]; then
  [ -r "$RPM_SIGNING_KEY" ] || { echo "build.sh: RPM_SIGNING_KEY $RPM_SIGNING_KEY is not a readable file" >&2; exit 2; }
  RPM_SIGNING_KEY=$(cd "$(dirname "$RPM_SIGNING_KEY")" && pwd)/$(basename "$RPM_SIGNING_KEY")
  [ "$format" = rpm ] && echo "build.sh: signing the RPM with $RPM_SIGNING_KEY" >&2
fi

# Static: CentOS 7 has glibc 2.17 and kernel 3.10; a static Go binary
# needs neither a newer libc nor anything but the kernel's syscalls.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$APPLIANCE_BIN" ./cmd/appliance
# nfpm expands ${VERSION} and ${RELEASE} itself, but not paths in contents.
sed "s#\${APPLIANCE_BIN}#$APPLIANCE_BIN#" rpm/nfpm.yaml > "$out/nfpm.yaml"
if [ "$format" = rpm ] && [ -n "$RPM_SIGNING_KEY" ]; then
  # Refuse a key CentOS 7 cannot verify before building anything.
  go run ./rpm/seal --check-key "$RPM_SIGNING_KEY"
fi
go tool nfpm package --config "$out/nfpm.yaml" --packager "$format" --target "$out/" >&2
if [ "$format" = rpm ]; then
  # nfpm writes only the SHA256 header digest, which rpm reads from 4.14 on:
  # add the SHA1 and MD5 digests CentOS 7's rpm 4.11 checks, and sign.
  go run ./rpm/seal ${RPM_SIGNING_KEY:+--key "$RPM_SIGNING_KEY"} "$out"/*.rpm
fi
ls "$out"/*."$format"
