# Postern — build, run and check. `make run` and `make test` are the
# README's quick start; keep both working on a fresh machine.

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
DATE     ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
export CGO_ENABLED ?= 0

.PHONY: all build run test lint vet staticcheck unit bench bench-scale profile soak clean dist

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/postern-relay ./cmd/postern-agent ./scripts/demotarget

# The whole system on its embedded defaults: relay on SQLite, an agent, a
# demo target, and a request through the tunnel. Ctrl-C stops everything.
run: build
	@./scripts/demo.sh

test: lint unit

lint: vet staticcheck

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

# -race for unit and integration tests; fuzz seeds run as ordinary tests;
# the end-to-end tests build and drive the real binaries.
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 12m ./...

# Performance: tunnel vs direct connection in one run, with ratios, the
# same through a relay serving TLS, and a fleet of POSTERN_BENCH_AGENTS
# agents (BENCH_AGENTS, 1,000, under make bench; SCALE_AGENTS, 10,000,
# under make bench-scale; POSTERN_BENCH_TUNNELS = 2 tunnels each) on one
# relay: RSS and CPU per idle agent, reconnect after a relay kill. The fleet
# needs an open-file limit of agents x tunnels + 500 (ulimit -Hn).
BENCH_AGENTS ?= 1000
bench:
	POSTERN_BENCH_AGENTS=$(BENCH_AGENTS) $(GO) test -run '^$$' -bench . -benchtime 3x -count 1 -timeout 45m ./cmd/bench/

# The fleet scenario alone (same table, scale rows only).
SCALE_AGENTS ?= 10000
bench-scale:
	POSTERN_BENCH_AGENTS=$(SCALE_AGENTS) $(GO) test -run '^$$' -bench 'Tunnel/[0-9]+_agents' -benchtime 1x -count 1 -timeout 30m ./cmd/bench/

# CPU and allocation profiles of the relay and the agent under each HTTP
# and bulk load of the bench (plain and wss://), and heap and goroutine
# profiles while 1,000 streams idle, in $(PROFILES) as
# <process>-<cpu|allocs|heap|goroutine>-<scenario>.pprof; read them with
# `go tool pprof -top bin/postern-relay FILE`. docs/performance.md reads them.
PROFILES ?= profiles
profile:
	mkdir -p $(PROFILES)
	POSTERN_BENCH_PROFILES=$(abspath $(PROFILES)) $(GO) test -run '^$$' -bench 'BenchmarkTunnel/(open|HTTP|bulk)' -benchtime 1x -count 1 -timeout 30m ./cmd/bench/

# Long fault and load tests (cmd/faults: 1 KB/s link, 10,000 streams, a
# million stream cycles, 1,000 reconnects, slowloris), with their
# measurements printed. -race needs cgo, which the default above turns off.
soak:
	CGO_ENABLED=1 POSTERN_SOAK=1 $(GO) test -race -count=1 -timeout 60m -run Soak -v ./...

clean:
	rm -rf $(BIN) .run

# Release binaries of both programs: static (CGO_ENABLED=0), stamped with
# version, commit and date, named PROGRAM-OS-ARCH[.exe], with SHA256SUMS.
# cmd/postern-agent/dist_test.go cross-compiles every platform listed here.
DIST_PLATFORMS := linux/amd64 linux/arm64 windows/amd64 darwin/arm64
SHA256   := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo 'shasum -a 256')

dist:
	rm -rf dist && mkdir -p dist
	@for p in $(DIST_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; \
		if [ "$$os" = windows ]; then ext=.exe; fi; \
		for prog in postern-agent postern-relay; do \
			echo "dist/$$prog-$$os-$$arch$$ext"; \
			CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
				-o dist/$$prog-$$os-$$arch$$ext ./cmd/$$prog || exit 1; \
		done; \
	done
	cd dist && $(SHA256) postern-* > SHA256SUMS
	@cat dist/SHA256SUMS
