#!/usr/bin/env bash
# bench-warmpool.sh measures submit → running with and without scriptPods.warmPool on the local cluster
# (e2e/chart TestWarmPoolMeasureSubmitToRunning): a node with room for two script pods, empty, held by two
# placeholders, or full of pods at the script pods' priority with a node added as soon as the scheduler says
# there is no room. It takes the shared e2e lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
make build >/dev/null
clis=$(scripts/build-clis.sh)
flock /tmp/octo-e2e.lock env OCTO_MEASURE_WARM_POOL=1 OCTO_KUBE_BIN="$(scripts/build-kube.sh)" OCTO_BINARY="$PWD/bin/octo-worker" \
  OCTO_HELM="$clis/helm" OCTO_KUBECTL="$clis/kubectl" \
  go test -count=1 -p 1 -v -run '^TestWarmPoolMeasureSubmitToRunning$' ./e2e/chart/ | grep -E 'submit → running|unschedulable after|^(ok|FAIL|---)'
