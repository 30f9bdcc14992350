# Tabby — see README.md. Every target works on a fresh machine after `make deps`
# (and `make test` runs `deps` itself).

GO       ?= go
BIN      ?= bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...
# The race detector runs over the concurrency tests of the LPM (the full
# differential tests are too slow under -race) and over whole packages whose
# goroutines share state (pipeline, AF_XDP rings, engine, encap tunnels, acl).
RACE_LPM  := ./lpm/... ./control/...
RACE_PKGS := ./datapath/... ./encap/... ./acl/... ./bench/topo/...

.PHONY: all build test test-unit test-race test-k8s e2e bench bench-json deps demo lint fmt clean

all: build

## build: build bin/tabby and the CNI plugin bin/tabby-cni (installed as "tabby" in a CNI bin dir)
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/tabby ./cmd/tabby
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/tabby-cni ./cmd/tabby-cni

## deps: install what builds and tests need (Go modules; Debian packages for the network tests)
deps:
	$(GO) mod download
	./scripts/deps.sh

## test: the whole test suite (what CI runs): vet, unit tests with fuzz seeds, race tests,
## and the Kubernetes datastore against a real kube-apiserver (separate module under test/)
test: deps lint test-unit test-race test-k8s

test-unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

test-race:
	$(GO) test -count=1 -race -timeout 20m -run 'Concurrent|Race' $(RACE_LPM)
	$(GO) test -count=1 -race -timeout 20m -short $(RACE_PKGS)

# The test/ module builds k8s.io/kubernetes' in-process kube-apiserver: ~7 min and
# ~2.4 GB of build cache when cold. Never build it with -trimpath. test/kubernetes
# tests the datastore; test/agent runs agents (root: network namespaces) and the
# tabby CLI (bin/tabby) against the apiserver.
test-k8s: build
	cd test && $(GO) vet ./... && TABBY_BIN=$(abspath $(BIN))/tabby $(GO) test -count=1 -timeout 20m ./...

## e2e: the lab suite alone (root; also part of test-unit): kernel dataplane x {vxlan,
## vxlan-crosssubnet, none with BIRD 2}: matrix, policy, MTU, iperf3, agent restart, 100 pod
## cycles with a leak check (~1.5 min). TABBY_LAB_CASES=all adds the afxdp and mixed cases.
e2e:
	$(GO) test -count=1 -v -timeout 10m -run 'TestLab' ./cmd/tabby

## bench: the micro-benchmark suites, human tables
bench: build
	$(BIN)/tabby bench lpm encap pipeline acl control

## bench-json: the same as JSON lines
bench-json: build
	$(BIN)/tabby bench lpm encap pipeline acl control --json

## demo: build and run the demo (see README)
demo: build
	./scripts/demo.sh

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
