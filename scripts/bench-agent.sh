#!/usr/bin/env bash
# bench-agent.sh: the worker agent's benchmarks (issue 4), against the local control plane, in one run so the
# ratios compare figures measured side by side:
#   BenchmarkOperationOverhead  submit→result of `exit 0` vs a bare client-go Job (worker/bare; goal ≤ 1.2)
#   BenchmarkLogThroughput      lines/s stored by the server vs raw GetLogs of the same finished pod (goal ≥ 0.8):
#                               worker/raw following the pod live (bounded by the pod's own output rate,
#                               runner/raw), catchup/raw delivering a finished pod's log after a restart, and
#                               server-append-lines/s, the server alone; it logs each process's CPU per line
#                               per phase (*-cpu-ns/line: the figures to compare on a shared machine), and
#                               OCTO_BENCH_PROFILE=DIR writes pprof CPU profiles there
#   BenchmarkIdleWorker         RSS, CPU and Kubernetes API requests/min of an idle agent (OCTO_BENCH_IDLE, 5m),
#                               with the start-up pages released (the default) and kept (the baseline)
#   BenchmarkConcurrent200      200 operations at once: wall time vs one alone, peak RSS, API requests/op
# Usage: scripts/bench-agent.sh [go test -bench regexp]. Needs root (the local node); builds what is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export OCTO_KUBE_BIN="${OCTO_KUBE_BIN:-$(scripts/build-kube.sh)}"
if [ -z "${OCTO_BINARY:-}" ]; then
  make -s build
  export OCTO_BINARY="$root/bin/octo-worker"
fi
go test ./e2e/agent/ -p 1 -count 1 -run '^$' -bench "${1:-.}" -benchtime 1x -timeout 60m
