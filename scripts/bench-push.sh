#!/usr/bin/env bash
# The push benchmark (issue #28): pushes/s through the dispatcher's push
# provider to the local APNs server (HTTP/2 over TLS, one connection), both
# in one process on this machine's cores: ROUNDS rounds (default 3) of one
# device per send, then three devices per send (the fan-out). Prints
# pushload's JSON line per run.
#
#   scripts/bench-push.sh [--duration-secs 10]
#
# Needs the release binary:
#   cargo build --release -p clarion-bench --bin pushload
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
ROUNDS=${ROUNDS:-3}
for _ in $(seq 1 "$ROUNDS"); do
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$BIN/pushload" --devices 1 --concurrency 256 "$@" | tail -1
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$BIN/pushload" --devices 3 --concurrency 85 "$@" | tail -1
done
