#!/usr/bin/env bash
# cluster-down.sh stops the cluster that scripts/cluster-up.sh started (SIGTERM, then SIGKILL after 30 s)
# and removes .cluster/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=.cluster
if [ -f "$dir/pid" ]; then
  pid="$(cat "$dir/pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster-down: pid $pid did not stop within 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
fi
rm -rf "$dir"
echo "cluster-down: stopped"
