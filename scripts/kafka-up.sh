#!/usr/bin/env bash
# Starts the Kafka-protocol broker used by the Kafka backend's tests: tansu
# (crates.io), on 127.0.0.1:9092 with in-memory storage. Idempotent: reuses an
# installed binary and a broker that already answers. Prints the broker address.
#
#   scripts/kafka-up.sh            # install if needed, start, wait until it answers
#   KAFKA_PORT=19092 scripts/kafka-up.sh
#   TANSU_STORAGE=sqlite://data/tansu.db scripts/kafka-up.sh   # durable broker
set -euo pipefail

PORT=${KAFKA_PORT:-9092}
STORAGE=${TANSU_STORAGE:-memory://tansu/}
TANSU_VERSION=0.6.0
LOG=${TANSU_LOG:-/tmp/clarion-tansu-$PORT.log}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

if answers; then
  echo "kafka broker already answering on 127.0.0.1:$PORT"
  exit 0
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null || ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "installing tansu $TANSU_VERSION from crates.io (about 15 minutes cold)..."
  # Its own target dir: installing must not contend with the workspace's lock.
  CARGO_TARGET_DIR=${TANSU_TARGET_DIR:-/tmp/tansu-build} \
    cargo install tansu --version "$TANSU_VERSION" --features dynostore,libsql --locked
fi

echo "starting tansu on 127.0.0.1:$PORT (storage $STORAGE, log $LOG)"
nohup tansu broker \
  --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine "$STORAGE" >"$LOG" 2>&1 &

for _ in $(seq 1 100); do
  if answers; then
    echo "kafka broker answering on 127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.2
done
echo "tansu did not start; last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2
exit 1
