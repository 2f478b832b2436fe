# The Makefile is the contract: CI (.ci/run) and the README call these targets and nothing else.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN := bin/octo-worker
LDFLAGS := -s -w -X main.version=$(VERSION)
# Packages that need no cluster; the e2e packages start the local control plane.
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/e2e')
E2E_TIMEOUT ?= 60m

.PHONY: all build kube clis test e2e bench lint generate demo cluster-up cluster-down clean

all: build

## build: the static octo-worker binary (CGO_ENABLED=0) in bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/octo-worker

## kube: build (or reuse from the cache) the local control plane's binaries
kube:
	@scripts/build-kube.sh >/dev/null

## clis: build (or reuse from the cache) the upstream helm and kubectl that the e2e tests run, at go.mod's versions
clis:
	@scripts/build-clis.sh >/dev/null

## test: unit and integration tests that need no cluster, with the race detector
test:
	@command -v chromium >/dev/null || [ -n "$$OCTO_CHROMIUM" ] || echo "WARNING: no chromium: the portal's browser test skips (apt-get install -y chromium); with CI set it fails"
	@[ -n "$$OCTO_TEST_POSTGRES$$OCTO_PG_BIN" ] || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || echo "WARNING: no PostgreSQL binaries: the PostgreSQL driver's tests skip (apt-get install -y postgresql); with CI set they fail"
	$(GO) test -race -count=1 $(UNIT_PKGS)

## e2e: end-to-end tests against the local control plane (builds what is missing first)
e2e: build kube clis
	clis=$$(scripts/build-clis.sh) && \
	OCTO_KUBE_BIN=$$(scripts/build-kube.sh) OCTO_BINARY=$(CURDIR)/$(BIN) OCTO_HELM=$$clis/helm OCTO_KUBECTL=$$clis/kubectl \
	  $(GO) test -count=1 -p 1 -timeout $(E2E_TIMEOUT) ./e2e/...

## bench: Go benchmarks and scripted measurements; figures are ratios against a baseline of the same run
bench: build kube clis
	clis=$$(scripts/build-clis.sh) && \
	OCTO_KUBE_BIN=$$(scripts/build-kube.sh) OCTO_BINARY=$(CURDIR)/$(BIN) OCTO_HELM=$$clis/helm OCTO_KUBECTL=$$clis/kubectl \
	  scripts/bench.sh

## lint: go vet and gofmt (make test checks that the generated chart files are in sync)
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## generate: regenerate values.yaml, values.schema.json and the chart README table from chartgen's type
generate:
	$(GO) run ./cmd/octo-worker chartgen generate --chart charts/octo-worker

## demo: the main job end to end on the local control plane (see README)
demo: build kube
	OCTO_KUBE_BIN=$$(scripts/build-kube.sh) scripts/demo.sh $(CURDIR)/$(BIN)

## cluster-up: start the local control plane in the background; writes .cluster/kubeconfig
cluster-up: build kube
	OCTO_KUBE_BIN=$$(scripts/build-kube.sh) scripts/cluster-up.sh

## cluster-down: stop the cluster that cluster-up started
cluster-down:
	scripts/cluster-down.sh

clean:
	rm -rf bin .cluster
