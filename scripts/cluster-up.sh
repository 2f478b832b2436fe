#!/usr/bin/env bash
# cluster-up.sh starts the local control plane (e2e/cmd/localcluster) in the background and waits until it
# can run pods. It writes .cluster/kubeconfig (admin), .cluster/pid and logs in .cluster/; stop it with
# scripts/cluster-down.sh. Extra arguments go to localcluster (e.g. --nodes 2, --image NAME=PATH=FILE).
#
# The octo-worker binary in bin/ (make build) is offered as the image octo-worker:e2e at
# /usr/local/bin/octo-worker. Needs root: the process nodes create mount namespaces.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir=.cluster

usage() {
  cat <<MSG
The local cluster is running ($(cat "$dir/ready" 2>/dev/null)).
  export KUBECONFIG=$root/$dir/kubeconfig
  kubectl get nodes
Logs: $dir/localcluster.log and $dir/logs/. Stop it with: make cluster-down
MSG
}

if [ "$(id -u)" != 0 ]; then
  echo "cluster-up: the process nodes need root (they create mount namespaces); run as root" >&2
  exit 1
fi
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  echo "cluster-up: already running (pid $(cat "$dir/pid"))"
  usage
  exit 0
fi
bindir="${OCTO_KUBE_BIN:-$(scripts/build-kube.sh | tail -n 1)}"
rm -rf "$dir"
mkdir -p "$dir"
go build -o "$dir/localcluster" ./e2e/cmd/localcluster

args=(--dir "$dir" --bin-dir "$bindir")
if [ -x bin/octo-worker ]; then
  args+=(--image "octo-worker:e2e=/usr/local/bin/octo-worker=$root/bin/octo-worker")
fi
# setsid: the cluster outlives this shell and the terminal's signals; its processes die with it.
setsid "$dir/localcluster" "${args[@]}" "$@" >"$dir/localcluster.log" 2>&1 </dev/null &
pid=$!

start=$(date +%s)
while [ ! -f "$dir/ready" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "cluster-up: localcluster exited; its log ($dir/localcluster.log):" >&2
    tail -n 30 "$dir/localcluster.log" >&2
    exit 1
  fi
  if [ $(( $(date +%s) - start )) -gt 300 ]; then
    echo "cluster-up: not ready after 300 s; see $dir/localcluster.log and $dir/logs/" >&2
    exit 1
  fi
  sleep 0.2
done
echo "cluster-up: ready in $(( $(date +%s) - start )) s"
usage
