#!/usr/bin/env bash
# demo.sh [BINARY]: octo-worker's main job end to end on this machine.
#
# Builds what is missing (the static binary, the Kubernetes control plane binaries), starts the local control
# plane, a dispatch server on SQLite in a temporary directory and the worker agent against that cluster, then
# submits a three-step deployment (a step in the default worker-tools image, a step in its own image, and a
# step that fails), streams its logs, prints a summary and stops everything, also on Ctrl-C or failure.
# Usage: make demo (or scripts/demo.sh bin/octo-worker). Needs root (the local node runs containers as host
# processes in their own mount namespaces).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${1:-$root/bin/octo-worker}"
bold=$'\e[1m'; dim=$'\e[2m'; red=$'\e[31m'; green=$'\e[32m'; off=$'\e[0m'
[ -t 1 ] || { bold=; dim=; red=; green=; off=; }
step() { printf '\n%s==> %s%s %s(%s)%s\n' "$bold" "$*" "$off" "$dim" "$(date +%H:%M:%S)" "$off"; }
fail() { printf '%sdemo: %s%s\n' "$red" "$*" "$off" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/octo-demo.XXXXXX")"
pids=()
status=1
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    step "stopping everything"
    for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
  fi
  if [ "$status" -eq 0 ]; then
    rm -rf "$work"
  else
    echo "logs kept in $work (server.log, agent.log, cluster.log)" >&2
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'echo; echo "interrupted" >&2; exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)); }
http_ok() { # PORT PATH: a plain HTTP GET on loopback with bash's /dev/tcp (no curl needed)
  local status
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1 # (a bare exec 2>... would silence the script)
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  read -r -t 5 _ status _ <&3 || true
  exec 3<&- 3>&-
  [ "$status" = 200 ]
}
wait_http() { # PORT PATH WHAT PID
  for _ in $(seq 1 600); do
    if http_ok "$1" "$2"; then return 0; fi
    kill -0 "$4" 2>/dev/null || fail "$3 exited; see its log in $work"
    sleep 0.2
  done
  fail "$3 did not become ready (see $work)"
}

[ "$(id -u)" = 0 ] || fail "run as root: the local node runs pod containers as host processes in private mount namespaces"

step "building what is missing"
if [ ! -x "$bin" ]; then
  echo "building $bin"
  make -s build
fi
echo "octo-worker: $bin ($("$bin" --version))"
kube_bin="${OCTO_KUBE_BIN:-}"
if [ -z "$kube_bin" ]; then
  echo "Kubernetes v1.37 control plane binaries (a cold build takes 5-8 minutes; progress follows)"
  kube_bin="$(scripts/build-kube.sh)"
fi
echo "control plane binaries: $kube_bin"

step "starting the local control plane"
# The worker image (octo-worker:demo) carries this binary; the step image (demo/step-image:1.0) is the host's
# root with a file that says so; other valid image names run on the host's root.
printf 'demo step image 1.0\n' > "$work/step-image-release"
go build -o "$work/localcluster" ./e2e/cmd/localcluster
"$work/localcluster" --bin-dir "$kube_bin" --dir "$work/cluster" --cpu 8 --memory 16Gi \
  --image "octo-worker:demo=/usr/local/bin/octo-worker=$bin" \
  --image "demo/step-image:1.0=/etc/step-image-release=$work/step-image-release" \
  > "$work/cluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 1500); do
  [ -f "$work/cluster/ready" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { tail -20 "$work/cluster.log" >&2; fail "the local control plane did not start"; }
  sleep 0.2
done
[ -f "$work/cluster/ready" ] || fail "the local control plane did not become ready in 5 minutes"
kubeconfig="$work/cluster/kubeconfig"
echo "ready; kubeconfig: $kubeconfig"

step "starting the dispatch server (SQLite in $work)"
server_port="$(free_port)"
export OCTO_SERVER="http://127.0.0.1:$server_port"
export OCTO_TOKEN="demo-admin-$RANDOM$RANDOM"
"$bin" server --listen "127.0.0.1:$server_port" --db "$work/octo-worker.db" --admin-token "$OCTO_TOKEN" > "$work/server.log" 2>&1 &
pids+=($!)
wait_http "$server_port" /healthz "the dispatch server" "${pids[-1]}"
echo "server: $OCTO_SERVER"
"$bin" pool create --description "the demo's worker pool" demo >/dev/null
reg_token="$("$bin" token create --pool demo 2>/dev/null)"

step "starting the worker agent"
health_port="$(free_port)"
cat > "$work/values.yaml" <<VALUES
worker:
  serverUrl: $OCTO_SERVER
  pools: [demo]
  concurrency: 5
  heartbeatInterval: 2s
image:
  repository: octo-worker
  tag: demo
scriptPods:
  worker:
    image:
      repository: octo-worker/worker-tools
      tag: demo
  imagePullGrace: 10s
VALUES
OCTO_REGISTRATION_TOKEN="$reg_token" "$bin" --log-format text agent --values "$work/values.yaml" \
  --kubeconfig "$kubeconfig" --namespace default --release demo-worker \
  --health-listen "127.0.0.1:$health_port" > "$work/agent.log" 2>&1 &
pids+=($!)
wait_http "$health_port" /readyz "the worker agent" "${pids[-1]}"
echo "worker ready (log: $work/agent.log)"

step "submitting a three-step deployment and streaming its logs"
cat > "$work/deployment.yaml" <<'DEPLOY'
name: demo-release-42
pool: demo
steps:
  - name: preflight (worker-tools image)
    script: |
      echo "Deploying release 42 from $(hostname), running as uid $(id -u)"
      echo "Checking the target environment..."
      for svc in web api worker; do echo "  $svc: reachable"; done
  - name: migrate (its own image)
    image: demo/step-image:1.0
    variables:
      - {name: DB_PASSWORD, value: hunter2-not-in-any-log, sensitive: true}
    script: |
      echo "Running in: $(cat /etc/step-image-release)"
      echo "Connecting to the database with password $DB_PASSWORD"
      echo "Applied 3 migrations"
  - name: smoke test (fails on purpose)
    script: |
      echo "Smoke-testing https://web.example.invalid/health ..."
      sleep 1 # the request
      echo "ERROR: expected HTTP 200, got 503 from web" >&2
      exit 4
DEPLOY
set +e
"$bin" deploy -f "$work/deployment.yaml" --follow
deploy_code=$?
set -e

step "summary"
"$bin" ops list --limit 3 || true
echo
if [ "$deploy_code" -ne 0 ]; then
  printf '%sThe deployment failed at its third step, as intended: the failure is reported with its exit code and stderr above.%s\n' "$green" "$off"
else
  fail "the deployment succeeded, but its third step was meant to fail"
fi
status=0
