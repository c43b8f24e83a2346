# wgk3s: `make test` is what CI runs; `make help` lists the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     := bin/appliance
LDFLAGS := -s -w -X main.version=$(VERSION)
# Fuzzing budgets are counts of executions, not durations: go1.26's fuzz
# coordinator can fail a run with "context deadline exceeded" when a
# duration ends while a worker is busy (golang/go#75804, fixed in go1.27).
FUZZTIME ?= 300000x

.PHONY: help demo build deps test unit e2e systemd-test kernel-test real-test fuzz lint rpm deb packages bench bench-smoke bench-bins clean

help:
	@echo "make demo    a simulated three-cloud cluster in network namespaces, narrated, then removed (root)"
	@echo "make build   static appliance binary in $(BIN)"
	@echo "make test    deps + lint + all tests (namespace tests need root) + a short fuzz run; what CI runs"
	@echo "make unit    go test ./... only"
	@echo "make e2e     the end-to-end tests in network namespaces only (root)"
	@echo "make systemd-test  the .deb in Debian containers booted with systemd (systemd-nspawn, mmdebstrap; root, ~1.5 min)"
	@echo "make kernel-test  the e2e suite in kernel mode, in Debian's kernel booted under QEMU (root, ~3 min emulated)"
	@echo "make real-test  a real k3s cluster in the simulated clouds (root; WGK3S_K3S_BINARY=/path/to/k3s; not part of make test)"
	@echo "make bench   throughput, start time, reload cost, memory; writes BENCHMARKS.md (root, ~8 min)"
	@echo "make fuzz    fuzz the cluster file parser for FUZZTIME ($(FUZZTIME)), the k3s extra-args check and the join code for 200000 runs each"
	@echo "make lint    gofmt + go vet"
	@echo "make rpm     dist/wgk3s-VERSION-1.x86_64.rpm for CentOS 7 (VERSION=x.y.z to set it; RPM_SIGNING_KEY=key.asc signs it)"
	@echo "make deb     dist/wgk3s_VERSION-1_amd64.deb from the same description"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/appliance

deps:
	@scripts/deps.sh

demo: deps build
	@if [ -n "$$WGK3S_K3S_BINARY" ]; then scripts/deps.sh real; fi
	$(GO) build -o bin/k3s-standin ./internal/k3sstandin
	$(GO) build -o bin/demo ./cmd/demo
	bin/demo --appliance $(BIN) --k3s-standin bin/k3s-standin

bench-bins: build
	$(GO) build -o bin/k3s-standin ./internal/k3sstandin
	$(GO) build -o bin/bench ./cmd/bench
	# the reference: wireguard-go built from the module version pinned in go.mod
	$(GO) build -o bin/wireguard-go golang.zx2c4.com/wireguard

bench: deps bench-bins
	bin/bench --out BENCHMARKS.md

bench-smoke: deps bench-bins
	bin/bench --smoke --out dist/BENCHMARKS-smoke.md

e2e: deps
	$(GO) test -count=1 -timeout 30m -v ./e2e/

# The rootfs is cached in /var/cache/wgk3s-systemd-test (built on first use).
systemd-test: deps
	WGK3S_SYSTEMD_TEST=1 $(GO) test -count=1 -timeout 20m -v ./e2e/systemd/

# Debian's kernel package (downloaded once into /var/cache/wgk3s-kernel-test)
# boots under QEMU; the e2e suite runs in kernel mode inside.
kernel-test: deps
	WGK3S_KERNEL_TEST=1 $(GO) test -count=1 -timeout 30m -v ./e2e/kernelvm/

# A real k3s (WGK3S_K3S_BINARY; README "A real k3s"): its tests skip, with
# the reason, without it. Not part of make test: CI has no k3s.
real-test:
	@scripts/deps.sh real
	$(GO) test -count=1 -timeout 60m -v ./e2e/realk3s/

test: deps lint packages unit systemd-test kernel-test fuzz bench-smoke

unit:
	$(GO) test -count=1 -timeout 30m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./configs
	$(GO) test -run '^$$' -fuzz '^FuzzExtraArgs$$' -fuzztime 200000x -fuzzminimizetime 2s ./configs
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 200000x -fuzzminimizetime 2s ./membership

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

rpm:
	rpm/build.sh rpm dist

deb:
	rpm/build.sh deb dist

packages: rpm deb

clean:
	rm -rf bin dist
