#!/usr/bin/env bash
# The Kafka mode at scale, side by side in one run (issue #31): first raw
# rdkafka produce + consume on the broker, then Clarion on the same broker
# with every role in its own process (`clarion run ROLE`), loadgen against the
# gateway, counters added up over the processes' /metrics. Prints both
# reports and the ratio of the pipeline's events/s to the raw produce rate.
#
#   scripts/kafka-up.sh                                # tansu on 127.0.0.1:9092
#   FRESH_BROKER=1 scripts/bench-kafka.sh ...          # the same, tansu restarted first
#   scripts/bench-kafka.sh --recipients-per-trigger 1 --concurrency 32 --duration-secs 15
#   scripts/bench-kafka.sh --recipients-per-trigger 10 --concurrency 16 --duration-secs 15
#
# ROLES (default "router dispatcher projector") are the processor roles
# started besides the gateway; PARTITIONS (default 4) the topics' partition
# count; BROKERS (default 127.0.0.1:9092); KAFKA_PARAMS the log URL's query
# (e.g. "linger_ms=10"). The processes share one SQLite
# store file (the embedded stand-in for ScyllaDB). Each process's stderr of
# the last run is kept in /tmp/bench-kafka-ROLE.err, its metrics at the end
# in /tmp/bench-kafka-ROLE.metrics. Needs the release
# binaries:
#   cargo build --release -p clarion -p clarion-bench --bin clarion --bin loadgen
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
BROKERS=${BROKERS:-127.0.0.1:9092}
ROLES=${ROLES:-router dispatcher projector}
PARTITIONS=${PARTITIONS:-4}
RECORDS=${RAW_RECORDS:-200000}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-kafka.XXXXXX")
PREFIX="bench-$RANDOM$RANDOM."
GRPC=${GRPC_PORT:-50071}
HTTP=${HTTP_PORT:-18091}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for f in "$RUN"/*.err; do [[ -e $f ]] && cp "$f" "/tmp/bench-kafka-$(basename "$f")"; done
  rm -rf "$RUN"
}
trap cleanup EXIT

# tansu keeps every record in memory and slows down as it fills: with
# FRESH_BROKER=1 the local one is started afresh (scripts/kafka-up.sh).
if [[ -n "${FRESH_BROKER:-}" ]]; then
  pkill -x tansu || true
  sleep 1
  "$ROOT/scripts/kafka-up.sh" >/dev/null
fi

echo "== raw rdkafka on $BROKERS =="
raw=$("$BIN/loadgen" --kafka-baseline "$BROKERS" --kafka-records "$RECORDS")
echo "$raw" | grep -v '^{'
produce=$(echo "$raw" | tail -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["produce_per_s"])')

cat >"$RUN/clarion.toml" <<EOF
data-dir = "$RUN/data"
[log]
url = "kafka://$BROKERS${KAFKA_PARAMS:+?$KAFKA_PARAMS}"
topic-prefix = "$PREFIX"
partitions = $PARTITIONS
[store]
url = "sqlite://$RUN/store.db"
[grpc]
listen = "127.0.0.1:$GRPC"
EOF

# `serve` once, for what a first start makes (topics, the demo tenant and
# its API key); then each role in a process of its own.
"$BIN/clarion" --config "$RUN/clarion.toml" serve --http-listen "127.0.0.1:$HTTP" \
  >"$RUN/serve.out" 2>"$RUN/serve.err" &
PIDS+=($!)
KEY=""
for _ in $(seq 1 150); do
  KEY=$(awk '/demo API key/ {print $4}' "$RUN/serve.out" 2>/dev/null || true)
  [[ -n "$KEY" ]] && curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && break
  sleep 0.2
done
[[ -n "$KEY" ]] || { echo "serve did not start:"; cat "$RUN/serve.err"; exit 1; }
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()

METRICS=""
port=$HTTP
for role in gateway $ROLES; do
  port=$((port + 1))
  "$BIN/clarion" --config "$RUN/clarion.toml" run "$role" --http-listen "127.0.0.1:$port" \
    >"$RUN/$role.out" 2>"$RUN/$role.err" &
  PIDS+=($!)
  METRICS="$METRICS,http://127.0.0.1:$port/metrics"
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break
    sleep 0.2
  done
done
METRICS=${METRICS#,}

cpu() { # utime + stime of the processes, in clock ticks
  local t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
TANSU=$(pgrep -x tansu | head -n 1 || true)
c0=$(cpu "${PIDS[@]}"); b0=$(cpu ${TANSU:-}); t0=$(date +%s.%N)

echo
echo "== Clarion on $BROKERS: gateway $ROLES, one process each, $PARTITIONS partitions =="
out=$("$BIN/loadgen" --endpoint "http://127.0.0.1:$GRPC" --metrics "$METRICS" --api-key "$KEY" "$@")
echo "$out" | grep -v '^{'

c1=$(cpu "${PIDS[@]}"); b1=$(cpu ${TANSU:-}); t1=$(date +%s.%N)
i=0
for role in gateway $ROLES; do # each process's metrics, for the analysis
  i=$((i + 1))
  curl -sf "http://127.0.0.1:$((HTTP + i))/metrics" >"/tmp/bench-kafka-$role.metrics" || true
done
events=$(echo "$out" | tail -n 1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("delivery", {}).get("logged_events_per_s") or 0)')
python3 - "$events" "$produce" "$c0" "$c1" "$b0" "$b1" "$t0" "$t1" <<'PY'
import os, sys
events, produce, c0, c1, b0, b1, t0, t1 = map(float, sys.argv[1:])
hz, secs = os.sysconf("SC_CLK_TCK"), t1 - t0
print(f"\npipeline {events:.0f} events/s = {100 * events / produce:.1f} % of raw produce ({produce:.0f}/s)")
print(f"CPU over the run ({secs:.1f} s): Clarion processes {(c1 - c0) / hz / secs:.2f} cores, broker {(b1 - b0) / hz / secs:.2f} cores")
PY
