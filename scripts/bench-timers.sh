#!/usr/bin/env bash
# Pending timers at scale (docs/benchmarks.md, "Pending timers"):
#   1. `timerload load`: --timers pending timers of mixed kinds (delays, quiet-hour holds,
#      digests, schedules) made through the real path in-process, on a data dir on disk;
#      prints RSS while running and bytes on disk per timer;
#   2. a `clarion serve` on that data dir is killed with -9 once ready, then started again:
#      the time until /readyz answers and its RSS then;
#   3. `timerload fire`: the clock moved two days on, every timer is due: the firing rate.
#
#   scripts/bench-timers.sh                 # 10,000,000 timers
#   TIMERS=1000000 scripts/bench-timers.sh
#
# Needs the release binaries:
#   cargo build --release --locked -p clarion -p clarion-bench --bin clarion --bin timerload
# The data dir is made under $TMPDIR (default /tmp); 10M timers take several GB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
TIMERS=${TIMERS:-10000000}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-timers.XXXXXX")
trap 'kill -9 ${PID:-0} 2>/dev/null || true; rm -rf "$RUN"' EXIT
"$BIN/timerload" --data-dir "$RUN/data" load --timers "$TIMERS" ${MIX:+--mix "$MIX"}

HTTP=${HTTP_PORT:-18091}
serve() {
  "$BIN/clarion" serve --data-dir "$RUN/data" --grpc-listen 127.0.0.1:${GRPC_PORT:-50071} \
    --http-listen "127.0.0.1:$HTTP" >>"$RUN/server.out" 2>>"$RUN/server.err" &
  PID=$!
}
ready() {
  for _ in $(seq 1 6000); do
    curl -sf "http://127.0.0.1:$HTTP/readyz" >/dev/null && return 0
    sleep 0.01
  done
  echo "not ready after 60 s"; tail -5 "$RUN/server.err"; exit 1
}
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$PID/status"; }
serve; ready; kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start=$(date +%s.%N); serve; ready; end=$(date +%s.%N)
rss_ready=$(rss); sleep 5; rss_later=$(rss)
kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=
echo "{\"phase\": \"restart\", \"ready_secs\": $(echo "$end - $start" | bc), \"rss_mib_ready\": $rss_ready, \"rss_mib_after_5s\": $rss_later}"

"$BIN/timerload" --data-dir "$RUN/data" fire
