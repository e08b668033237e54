#!/usr/bin/env bash
# The preference center's read benchmark (issue #27): a fresh `clarion serve`,
# SUBSCRIBERS subscribers (default 1,000) each with a few settings changed
# through the REST API, then restload GETs their preferences at RATE
# requests/s (default 2,000) spread over all of them. Prints restload's JSON
# report (latency from each request's due time: p50, p99, ...).
#
#   scripts/bench-preferences.sh [--duration-secs 20]
#
# Needs the release binaries:
#   cargo build --release -p clarion -p clarion-bench --bin clarion --bin restload
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
RATE=${RATE:-2000}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-bench.XXXXXX")
GRPC=${GRPC_PORT:-50062}
HTTP=${HTTP_PORT:-18082}
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
api() { curl -sf -o /dev/null -X "$1" -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d "$3" "http://127.0.0.1:$HTTP$2"; }
api PUT /v1/topics/marketing '{"name":"Offers","channels":["sms","email"],"default_opt_in":true,"marketing":true}'
api PUT /v1/topics/appointments '{"name":"Visits","required":true,"default_opt_in":true}'
for i in $(seq 0 $((SUBSCRIBERS - 1))); do
  api PUT "/v1/subscribers/s$i" "{\"email\":\"s$i@example.test\",\"phone\":\"+1514555$(printf %04d "$i")\"}"
  api PATCH "/v1/subscribers/s$i/preferences" '{"changes":[{"path":"topics.marketing.sms","value":"off"},{"path":"channels.push","value":"off"}]}'
done
# The changes are applied by the router: wait until the last one reads back.
last=$((SUBSCRIBERS - 1))
for _ in $(seq 1 100); do
  curl -sf -H "authorization: Bearer $KEY" "http://127.0.0.1:$HTTP/v1/subscribers/s$last/preferences" | grep -q '"push":"off"' && break
  sleep 0.1
done
"$BIN/restload" --url "http://127.0.0.1:$HTTP/v1/subscribers/s{i}/preferences" \
  --header "authorization: Bearer $KEY" --paths-from "$SUBSCRIBERS" --rate "$RATE" "$@"
