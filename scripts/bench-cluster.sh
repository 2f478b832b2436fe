#!/usr/bin/env bash
# bench-cluster.sh measures the local control plane: warm start to a ready cluster where a pod has run
# (ratio against the etcd + kube-apiserver start of the same run) and the idle control plane's memory
# (e2e/cluster/bench). It also prints the cold build time of the binaries when a build log is given
# (BUILD_LOG, default /tmp/build-kube.log, written by `scripts/build-kube.sh 2>BUILD_LOG`).
# Needs root, like the cluster. BENCHTIME (default 3x) sets the number of cluster starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OCTO_KUBE_BIN="${OCTO_KUBE_BIN:-$(scripts/build-kube.sh | tail -n 1)}"
log="${BUILD_LOG:-/tmp/build-kube.log}"
if [ -f "$log" ] && grep -q 'build-kube: done in' "$log"; then
  echo "cold build of the Kubernetes binaries ($log):"
  grep -E 'build-kube: (built|done)' "$log" | sed 's/^/  /'
fi
echo "load average before the benchmark: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
go test -run '^$' -bench BenchmarkWarmStart -benchtime "${BENCHTIME:-3x}" -count 1 -timeout 30m ./e2e/cluster/bench/
# The process node's container logs: the CRI writer and the log endpoint's reader, against a plain
# buffered copy of the same output.
go test -run '^$' -bench 'BenchmarkLog' -benchtime 20x -count 1 ./e2e/kubelet/
