#!/usr/bin/env bash
# bench-dispatch.sh: the dispatch server's benchmarks (issue 3). Each figure is reported beside a baseline
# measured in the same run, because the machine is shared and only ratios compare across runs:
#   BenchmarkEnqueueToLease  submit → lease for a worker waiting in a long-poll, p50/p90/p99, beside a bare
#                            HTTP round trip (POST, no-op handler) on the same loopback (p50-ratio; goal ≤ 3)
#   BenchmarkThroughput      operations/s through submit → lease → 10 log lines → result with 16 workers,
#                            beside the raw SQLite rate (same driver and pragmas, one INSERT per transaction;
#                            goal ≥ 1,000 operations/s)
#   store benchmarks         the SQLite store's hot statements beside BenchmarkRawInsertTx on the same file
# Usage: scripts/bench-dispatch.sh [count]  (count: how many times to repeat each benchmark, default 3)
set -euo pipefail
cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
count="${1:-3}"
echo "== dispatch/server (HTTP on loopback, SQLite in a temp dir)"
go test ./dispatch/server/ -run '^$' -count "$count" -timeout 30m \
  -bench 'BenchmarkEnqueueToLease$' -benchtime 2000x
go test ./dispatch/server/ -run '^$' -count "$count" -timeout 30m \
  -bench 'BenchmarkThroughput$' -benchtime 20000x
echo "== dispatch/store/sqlite (one transaction per op)"
go test ./dispatch/store/sqlite/ -run '^$' -count "$count" -timeout 30m -bench . -benchtime 5000x
