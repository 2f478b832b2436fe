#!/usr/bin/env bash
# build-clis.sh builds the upstream `helm` and `kubectl` CLIs that the end-to-end tests run as the contract
# (what a user runs is what the tests run), from the Go module proxy, into a cache directory beside the
# Kubernetes binaries of build-kube.sh, and prints the directory that holds them on its last line.
#
# The versions come from this repository's go.mod, so bumping a dependency rebuilds the matching CLI:
#   helm    = helm.sh/helm/v3/cmd/helm at the go.mod version of helm.sh/helm/v3 (e.g. v3.22.0)
#   kubectl = k8s.io/kubernetes/cmd/kubectl at v1.N.M for k8s.io/client-go v0.N.M (v0.37.2 -> v1.37.2)
# HELM_VERSION and KUBECTL_VERSION override them.
#
# A cold build takes minutes on 2 cores; a warm call returns at once. The cache key is the two versions plus
# RECIPE, a number to bump when the way the binaries are built changes (flags, ldflags): editing comments or
# progress output here keeps the cached build.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
modver() { (cd "$root" && go list -m -f '{{.Version}}' "$1"); }
HELM_VERSION="${HELM_VERSION:-$(modver helm.sh/helm/v3)}"
if [ -z "${KUBECTL_VERSION:-}" ]; then
  client_go="$(modver k8s.io/client-go)"
  KUBECTL_VERSION="v1.${client_go#v0.}"
fi
CACHE_ROOT="${OCTO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/octo-worker}"
RECIPE=1
out="$CACHE_ROOT/clis/helm-$HELM_VERSION-kubectl-$KUBECTL_VERSION-r$RECIPE"

if [ -x "$out/helm" ] && [ -x "$out/kubectl" ]; then
  echo "$out"
  exit 0
fi

log() { echo "build-clis: $*" >&2; }
mkdir -p "$CACHE_ROOT/clis"
# Built next to $out (same file system), so that the final mv is one atomic rename.
tmp="$(mktemp -d "$CACHE_ROOT/clis/.building.XXXXXX")"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$tmp"' EXIT
start=$(date +%s)
log "building helm $HELM_VERSION and kubectl $KUBECTL_VERSION into $out (cold: several minutes on 2 cores)"

# helm: `go install pkg@version` builds in helm's own module, so its dependencies are exactly the versions
# helm's go.mod asks for (as in a helm release), not ours. The ldflags are those of helm's Makefile for a
# tagged release: the version, and the Kubernetes version of helm's client-go, which helm reports as
# .Capabilities.KubeVersion in `helm template` and lints deprecated APIs against.
log "resolving helm $HELM_VERSION"
helm_gomod="$(cd "$work" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
helm_client_go="$(sed -n 's#^[[:space:]]*k8s.io/client-go \(v[0-9.]*\).*#\1#p' "$helm_gomod")"
helm_k8s_minor="$(echo "$helm_client_go" | cut -d. -f2)"
if [ -z "$helm_k8s_minor" ]; then
  log "cannot find k8s.io/client-go in $helm_gomod"
  exit 1
fi
hv=helm.sh/helm/v3/internal/version
helm_ldflags="-s -w -X $hv.version=$HELM_VERSION -X $hv.metadata= -X $hv.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$helm_k8s_minor"
done
t0=$(date +%s)
log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION ..."
(cd "$work" && GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
log "built helm in $(( $(date +%s) - t0 ))s"

# kubectl: its main lives in k8s.io/kubernetes, whose go.mod replaces every staging module (k8s.io/api, ...)
# with ./staging/src/...; a throwaway module replaces each with its published v0.N.M instead (as
# build-kube.sh does). The version is stamped where Kubernetes' hack/lib/version.sh stamps it.
log "resolving kubectl $KUBECTL_VERSION"
mkdir "$work/kubectl"
cd "$work/kubectl"
cat > go.mod <<MOD
module octo-worker.local/kubectlbuild

go 1.26.0

require k8s.io/kubernetes $KUBECTL_VERSION
MOD
kube_gomod="$(go mod download -json "k8s.io/kubernetes@$KUBECTL_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
staging="v0.${KUBECTL_VERSION#v1.}"
sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$kube_gomod" | while read -r m; do
  echo "replace $m => $m $staging" >> go.mod
done
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kubectl"
GO
# tidy reads tools.go (all build tags) and resolves exactly what kubectl needs, without upgrading.
go mod tidy >&2
kubectl_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kubectl_ldflags+=" -X $p.gitVersion=$KUBECTL_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(echo "$KUBECTL_VERSION" | cut -d. -f2)"
  kubectl_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
t0=$(date +%s)
log "go build k8s.io/kubernetes/cmd/kubectl ..."
CGO_ENABLED=0 go build -trimpath -ldflags "$kubectl_ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
log "built kubectl in $(( $(date +%s) - t0 ))s"

# Each must report the version it was built for, or the cache would hold a lie.
got="$("$tmp/helm" version --template '{{.Version}}')"
if [ "$got" != "$HELM_VERSION" ]; then
  log "helm reports version $got, want $HELM_VERSION"
  exit 1
fi
if ! "$tmp/kubectl" version --client | grep -qx "Client Version: $KUBECTL_VERSION"; then
  log "kubectl reports: $("$tmp/kubectl" version --client 2>&1), want Client Version: $KUBECTL_VERSION"
  exit 1
fi
"$tmp/helm" version >&2
"$tmp/kubectl" version --client >&2

chmod 755 "$tmp"
# A concurrent call may have finished first; its directory is as good as ours.
if ! mv -T "$tmp" "$out" 2>/dev/null && ! { [ -x "$out/helm" ] && [ -x "$out/kubectl" ]; }; then
  log "cannot move the binaries into $out"
  exit 1
fi
log "done in $(( $(date +%s) - start ))s"
echo "$out"
