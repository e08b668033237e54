#!/usr/bin/env bash
# One end-to-end run of chosen roles in one process on the embedded default:
# `clarion serve` once on a fresh data dir (for the demo tenant and its API
# key), stopped, then `clarion run ROLES...` on that data dir and loadgen
# against it. Compares builds whose `serve` runs different role sets (older
# builds have no `serve --without`).
#
#   ROLES="gateway router dispatcher projector notary" scripts/bench-roles.sh \
#     --concurrency 16 --recipients-per-trigger 50 --duration-secs 10
#
# BIN: the clarion binary's directory (default target/release); LOADGEN: the
# loadgen binary (default $BIN/loadgen). The data dir is made under $TMPDIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
LOADGEN=${LOADGEN:-$BIN/loadgen}
ROLES=${ROLES:-gateway router dispatcher projector}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-roles.XXXXXX")
GRPC=${GRPC_PORT:-50081}
HTTP=${HTTP_PORT:-18101}
listen=(--grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" --data-dir "$RUN/data")
PID=""
trap '[[ -n $PID ]] && kill $PID 2>/dev/null; wait 2>/dev/null; cp "$RUN"/*.err /tmp/ 2>/dev/null; rm -rf "$RUN"' EXIT

"$BIN/clarion" serve "${listen[@]}" >"$RUN/serve.out" 2>"$RUN/serve.err" &
PID=$!
KEY=""
for _ in $(seq 1 100); do
  KEY=$(awk '/demo API key/ {print $4}' "$RUN/serve.out" 2>/dev/null || true)
  [[ -n "$KEY" ]] && curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break
  sleep 0.2
done
[[ -n "$KEY" ]] || { echo "serve did not start:"; cat "$RUN/serve.err"; exit 1; }
kill $PID; wait $PID 2>/dev/null || true

# shellcheck disable=SC2086
"$BIN/clarion" run $ROLES "${listen[@]}" >"$RUN/run.out" 2>"$RUN/run.err" &
PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break
  sleep 0.2
done
"$LOADGEN" --endpoint "http://127.0.0.1:$GRPC" --metrics "http://127.0.0.1:$HTTP/metrics" \
  --api-key "$KEY" --server-pid "$PID" "$@"
