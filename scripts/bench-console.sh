#!/usr/bin/env bash
# The console's Notifications pages at 1,000,000 notifications (docs/benchmarks.md, "Console"):
# `consolebench` seeds the notifications into an embedded store on disk (index rows, subscriber
# lists, histories for the ones it opens), serves the REST and console routes on loopback, signs
# in and times the search page under several filters and the detail page (p50/p99 as seen by
# the client over loopback HTTP: server time plus a loopback round trip), then counts the bytes
# of a first load (sign-in page, CSS, JS, a search page; uncompressed, headers included).
#
#   scripts/bench-console.sh                          # 1,000,000 notifications over 30 days
#   NOTIFICATIONS=100000 DAYS=7 scripts/bench-console.sh
#
# Needs the release binary:
#   cargo build --release --locked -p clarion-bench --bin consolebench
# The data dir is made under $TMPDIR (default /tmp) and removed after; 1M take about 300 MB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/clarion-console.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
"$BIN/consolebench" --data-dir "$RUN/data" \
  --notifications "${NOTIFICATIONS:-1000000}" --days "${DAYS:-30}" \
  --requests "${REQUESTS:-300}" 2>"$RUN/stderr" || { tail -20 "$RUN/stderr"; exit 1; }
du -sh "$RUN/data" | awk '{print "{\"phase\": \"disk\", \"data_dir\": \"" $1 "\"}"}'
