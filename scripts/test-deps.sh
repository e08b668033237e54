#!/usr/bin/env bash
# Installs what the test suite needs besides Rust, on a fresh machine:
#  - aiosmtpd (PyPI): the real SMTP server the email tests deliver to;
#  - tansu (crates.io): the Kafka-protocol broker, installed and started by kafka-up.sh.
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd (SMTP server for tests)..."
  python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi

scripts/kafka-up.sh
