#!/usr/bin/env bash
# bench.sh runs every benchmark of the project, one area after another (never two at once: the machine has
# two cores and each figure is a ratio against a baseline measured in the same run, which needs quiet).
#   dispatch: enqueue→lease latency, throughput, log lines/s and writes per operation, on SQLite and
#             PostgreSQL                                           (scripts/bench-dispatch.sh)
#   scale:    one server process under 10,000 long-polling workers (scripts/bench-scale.sh)
#   cluster:  warm start and idle memory of the local control plane (scripts/bench-cluster.sh)
#   agent:    per-operation overhead, log throughput, idle worker, 200 concurrent operations (scripts/bench-agent.sh)
# Usage: scripts/bench.sh [dispatch|scale|cluster|agent ...]   (default: all four)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
areas=("$@")
[ ${#areas[@]} -gt 0 ] || areas=(dispatch scale cluster agent)
for a in "${areas[@]}"; do
  echo "=================== $a ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "scripts/bench-$a.sh"
done
