#!/usr/bin/env bash
# build-kube.sh builds the local control plane's binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler and etcd) at one pinned version, from the Go module proxy, into a cache directory
# outside the repository, and prints the directory that holds them on its last line.
#
# A cold build takes several minutes on 2 cores; a warm call returns at once. The cache key is the pinned
# pinned versions plus RECIPE, a number to bump when the way the binaries are built changes (flags, patches):
# editing comments or progress output here does not throw away a 15-minute build.
#
# Why etcd is built too: kube-apiserver v1.37 is built and tested against etcd v3.7 (its own go.mod requires
# the v3.7 client); Debian's etcd-server is v3.4. Building etcd from go.etcd.io/etcd/server/v3/etcdmain in the
# same throwaway module costs little extra, needs no apt, and keeps server and client versions matched.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.0}"
CACHE_ROOT="${OCTO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/octo-worker}"
RECIPE=1
out="$CACHE_ROOT/kube/$KUBE_VERSION-etcd$ETCD_VERSION-r$RECIPE"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd)

have_all() {
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || return 1; done
}
if have_all; then
  echo "$out"
  exit 0
fi

log() { echo "build-kube: $*" >&2; }
staging_minor="v0.${KUBE_VERSION#v1.}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

log "building Kubernetes $KUBE_VERSION control plane and etcd $ETCD_VERSION into $out (cold: about 5-8 minutes on 2 cores)"
cd "$work"
cat > go.mod <<MOD
module octo-worker.local/kubebuild

go 1.26.0

require k8s.io/kubernetes $KUBE_VERSION
MOD

log "resolving modules"
go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" > kube.json
gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' kube.json)"
# Every staging module that k8s.io/kubernetes replaces with ./staging/src/... is published at v0.N.M.
sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$gomod" | while read -r m; do
  echo "replace $m => $m $staging_minor" >> go.mod
done

mkdir -p etcd
cat > etcd/main.go <<'GO'
// Command etcd is etcd's own main, built here so its version matches the apiserver's client.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >> go.mod
# tidy reads tools.go (all build tags) and resolves exactly what the four mains need, without upgrading.
go mod tidy >&2

vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  t0=$(date +%s)
  log "go build $b ..."
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b"
  log "built $b in $(( $(date +%s) - t0 ))s"
done
t0=$(date +%s)
log "go build etcd ..."
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" ./etcd
log "built etcd in $(( $(date +%s) - t0 ))s"

rm -rf "$out"
mv "$tmp" "$out"
log "done in $(( $(date +%s) - start ))s"
"$out/kube-apiserver" --version >&2
echo "$out"
