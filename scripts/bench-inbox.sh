#!/usr/bin/env bash
# The in-app inbox's benchmarks (issue #28) against a fresh `clarion serve`:
#
#   scripts/bench-inbox.sh read [--items 10000 --rate 500 --duration-secs 20]
#       feed read latency with 10,000 items in one feed (first page, newest first)
#   scripts/bench-inbox.sh live [--subscribers 200 --rate 1000 --duration-secs 20]
#       trigger → Server-Sent Events arrival at 1,000 triggers/s
#
# Prints inboxload's JSON report (latency in microseconds from each request's
# or trigger's due time). The data directory is made under $TMPDIR.
#
# Needs the release binaries:
#   cargo build --release -p clarion -p clarion-bench --bin clarion --bin inboxload
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-bench.XXXXXX")
GRPC=${GRPC_PORT:-50063}
HTTP=${HTTP_PORT:-18083}
"$BIN/clarion" serve --grpc-listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" \
  --data-dir "$RUN/data" >"$RUN/server.out" 2>"$RUN/server.err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; cp "$RUN/server.err" /tmp/last-server.err; rm -rf "$RUN"' EXIT
KEY=""
for _ in $(seq 1 100); do
  KEY=$(awk '/demo API key/ {print $4}' "$RUN/server.out" 2>/dev/null || true)
  [[ -n "$KEY" ]] && curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break
  sleep 0.2
done
[[ -n "$KEY" ]] || { echo "server did not start:"; cat "$RUN/server.err"; exit 1; }
"$BIN/inboxload" --endpoint "http://127.0.0.1:$GRPC" --http "http://127.0.0.1:$HTTP" \
  --api-key "$KEY" "$@"
