#!/usr/bin/env bash
# One end-to-end benchmark run: a fresh `clarion serve` (fresh data dir; with
# LOG_URL=kafka://... also a fresh topic prefix), loadgen against it with the
# given flags, then the server is stopped. Prints loadgen's report.
#
#   scripts/bench-e2e.sh --concurrency 16 --duration-secs 20
#   scripts/bench-e2e.sh --concurrency 16 --steps 2
#   scripts/bench-e2e.sh --concurrency 16 --rate 1000
#   LOG_URL=kafka://127.0.0.1:9092 scripts/bench-e2e.sh --concurrency 64
#
# WITHOUT="exporter notary" leaves those roles out of `serve` (to measure what
# a role costs on the spine).
#
# The server's stderr of the last run is kept in /tmp/last-server.err. The data
# directory is made under $TMPDIR (default /tmp; TMPDIR=/dev/shm keeps it off the disk).
#
# Needs the release binaries:
#   cargo build --release -p clarion -p clarion-bench --bin clarion --bin loadgen
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-bench.XXXXXX")
GRPC=${GRPC_PORT:-50061}
HTTP=${HTTP_PORT:-18081}
args=(serve --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" --data-dir "$RUN/data")
for role in ${WITHOUT:-}; do args+=(--without "$role"); done
if [[ -n "${LOG_URL:-}" ]]; then
  args+=(--log-url "$LOG_URL")
  export CLARION__LOG__TOPIC_PREFIX="bench-$RANDOM$RANDOM."
fi
"$BIN/clarion" "${args[@]}" >"$RUN/server.out" 2>"$RUN/server.err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; cp "$RUN/server.err" /tmp/last-server.err; [[ -n "${KEEP_DATA:-}" ]] && cp -r "$RUN/data" "$KEEP_DATA"; rm -rf "$RUN"' EXIT
KEY=""
for _ in $(seq 1 100); do
  KEY=$(awk '/demo API key/ {print $4}' "$RUN/server.out" 2>/dev/null || true)
  [[ -n "$KEY" ]] && curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break
  sleep 0.2
done
[[ -n "$KEY" ]] || { echo "server did not start:"; cat "$RUN/server.err"; exit 1; }
"$BIN/loadgen" --endpoint "http://127.0.0.1:$GRPC" --metrics "http://127.0.0.1:$HTTP/metrics" \
  --api-key "$KEY" --server-pid "$PID" "$@"
