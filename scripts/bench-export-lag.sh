#!/usr/bin/env bash
# Warehouse export lag under the spine's full load: a fresh `clarion serve`
# (every role, the exporter among them), loadgen for 10 s at full rate, then
# the time from the end of the load until the `notifications` table's
# published rows (clarion_warehouse_rows_total) cover every delivered
# notification. AGE sets warehouse.max-file-age-ms (default here 5000).
#
#   cargo build --release --locked -p clarion -p clarion-bench --bin clarion --bin loadgen
#   AGE=5000 scripts/bench-export-lag.sh
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-lag.XXXXXX")
export CLARION__WAREHOUSE__MAX_FILE_AGE_MS=${AGE:-5000}
$BIN/clarion serve --grpc-listen 127.0.0.1:50071 --http-listen 127.0.0.1:18091 --data-dir $RUN/data > $RUN/out 2> $RUN/err &
PID=$!
for i in $(seq 1 100); do KEY=$(awk '/demo API key/ {print $4}' $RUN/out); [[ -n "$KEY" ]] && curl -sf http://127.0.0.1:18091/readyz >/dev/null && break; sleep 0.2; done
$BIN/loadgen --endpoint http://127.0.0.1:50071 --metrics http://127.0.0.1:18091/metrics --api-key $KEY --server-pid $PID --concurrency 16 --recipients-per-trigger 50 --duration-secs 10 > $RUN/load 2>&1
N=$(grep -o "delivered [0-9]* messages" $RUN/load | grep -o "[0-9]*")
END=$(date +%s.%N)
while true; do
  R=$(curl -s http://127.0.0.1:18091/metrics | awk '/^clarion_warehouse_rows_total\{table="notifications"\}/ {print $2}')
  R=${R:-0}
  if [ "${R%.*}" -ge "$N" ]; then break; fi
  sleep 0.5
  NOW=$(date +%s.%N); if awk -v a="$NOW" -v b="$END" 'BEGIN {exit !(a - b > 300)}'; then echo "timeout rows=$R n=$N"; break; fi
done
DONE=$(date +%s.%N)
echo "delivered $N; notifications rows $R; lag after the load ended: $(awk -v a="$DONE" -v b="$END" 'BEGIN {printf "%.2f", a - b}') s (max-file-age ${CLARION__WAREHOUSE__MAX_FILE_AGE_MS} ms)"
grep "notifications/s completed" $RUN/load
kill $PID; wait $PID 2>/dev/null; rm -rf $RUN
