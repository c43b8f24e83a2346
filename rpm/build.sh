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

# Static: CentOS 7 has glibc 2.17 and kernel 3.10; a static Go binary
# needs neither a newer libc nor anything but the kernel's syscalls.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$APPLIANCE_BIN" ./cmd/appliance
# nfpm expands ${VERSION} and ${RELEASE} itself, but not paths in contents.
sed "s#\${APPLIANCE_BIN}#$APPLIANCE_BIN#" rpm/nfpm.yaml > "$out/nfpm.yaml"
go tool nfpm package --config "$out/nfpm.yaml" --packager "$format" --target "$out/" >&2
ls "$out"/*."$format"
