#!/usr/bin/env bash
# bench-dispatch.sh: the dispatch server's benchmarks (issues 3 and 14), each once per store driver
# (sub-benchmarks db=sqlite and db=postgres, PostgreSQL from dispatch/store/postgres/pgtest: a private server
# in a temp dir, or $OCTO_TEST_POSTGRES), so the drivers' figures sit side by side. Each figure is reported
# beside a baseline measured in the same run, because the machine is shared and only ratios compare across runs:
#   BenchmarkEnqueueToLease  submit → lease for a worker waiting in a long-poll, p50/p90/p99, beside a bare
#                            HTTP round trip (POST, no-op handler) on the same loopback (p50-ratio; goal ≤ 3)
#   BenchmarkThroughput      operations/s through submit → lease → 10 log lines → result with 16 workers,
#                            beside the driver's raw rate (one INSERT per transaction, same engine and
#                            settings; goal ≥ 1,000 operations/s on SQLite)
#   BenchmarkLogLines        log lines/s stored through POST .../logs in batches of 1,000, beside the raw rate
#   BenchmarkHeartbeats      heartbeats/s a server absorbs from 64 workers, beside the raw rate
#   store benchmarks         the store's hot statements and log appends (dispatch/store/storebench), each
#                            beside its driver's raw rate; BenchmarkWrites: database writes and bytes per
#                            operation step (the capacity model in ARCHITECTURE.md); SQLite's file size
# Usage: scripts/bench-dispatch.sh [count]  (count: how many times to repeat each benchmark, default 3)
set -euo pipefail
cd "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
count="${1:-3}"
echo "== dispatch/server (HTTP on loopback; SQLite in a temp dir, PostgreSQL from pgtest)"
go test ./dispatch/server/ -run '^$' -count "$count" -timeout 30m \
  -bench 'BenchmarkEnqueueToLease$' -benchtime 2000x
go test ./dispatch/server/ -run '^$' -count "$count" -timeout 30m \
  -bench 'BenchmarkThroughput$' -benchtime 20000x
go test ./dispatch/server/ -run '^$' -count "$count" -timeout 30m \
  -bench 'BenchmarkLogLines$' -benchtime 500x
go test ./dispatch/server/ -run '^$' -count "$count" -timeout 30m \
  -bench 'BenchmarkHeartbeats$' -benchtime 3000x
echo "== dispatch/store (one transaction per call, every driver)"
go test ./dispatch/store/storebench/ -run '^$' -count "$count" -timeout 30m -bench . -benchtime 2000x
go test ./dispatch/store/sqlite/ -run '^$' -count 1 -timeout 30m -bench BenchmarkFileSize -benchtime 1x
