# wgk3s: `make test` is what CI runs; `make help` lists the targets.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     := bin/appliance
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 15s

.PHONY: help build deps test unit fuzz lint clean

help:
	@echo "make build   static appliance binary in $(BIN)"
	@echo "make test    deps + lint + all tests (namespace tests need root) + a short fuzz run; what CI runs"
	@echo "make unit    go test ./... only"
	@echo "make fuzz    fuzz the cluster file parser for FUZZTIME ($(FUZZTIME))"
	@echo "make lint    gofmt + go vet"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/appliance

deps:
	@scripts/deps.sh

test: deps lint unit fuzz

unit:
	$(GO) test -count=1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./configs

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
