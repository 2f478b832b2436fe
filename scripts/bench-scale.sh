#!/usr/bin/env bash
# bench-scale.sh: 10,000 simulated workers long-polling one dispatch server process (the real binary), on
# SQLite and on PostgreSQL (a private server from pgtest): the server's RSS and CPU while they wait, and the
# submit→lease hand-off latency p50/p99 with them waiting beside the same server's with one worker waiting,
# and beside the floor under it at the same moments: a raw insert, a request that reads the store once, and one
# the server refuses (e2e/scale). Goal: under 1 GiB RSS and p99 under 10 ms. It needs about 10,000 open files
# per process.
# Settings (environment): OCTO_SCALE_WORKERS (10000), OCTO_SCALE_WAIT (60s), OCTO_SCALE_SAMPLES (500),
# OCTO_SCALE_HEARTBEAT (the server's --heartbeat-interval; default its own, 5s), OCTO_SCALE_FLEET_PRIORITY
# (normal, nice or idle: the benchmark process's CPU priority once the server runs); OCTO_CPU_PROFILE=DIR makes
# the server write a CPU profile there.
# Usage: scripts/bench-scale.sh [go test -bench regexp]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${OCTO_BINARY:-}" ]; then
  make -s build
  export OCTO_BINARY="$root/bin/octo-worker"
fi
echo "load average before the benchmark: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
go test ./e2e/scale/ -run '^$' -bench "${1:-.}" -benchtime 1x -count 1 -timeout 60m
