# Clarion developer commands. `make run` and `make test` are the README's quick start.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test test-deps kafka-up bench loadgen lint fmt

## Build and run `clarion serve` on the embedded default (./data, gRPC :50051, HTTP :8080).
run:
	$(CARGO) run --release -p clarion -- serve

## Install and start what the tests need (aiosmtpd, chromium + chromedriver, helm + kubernetes-validate, tansu on 127.0.0.1:9092), then run every test.
test: test-deps
	$(CARGO) test --workspace --locked --no-fail-fast

test-deps:
	scripts/test-deps.sh

kafka-up:
	scripts/kafka-up.sh

## Criterion benches (domain hot path, log append, workflow engine, router).
bench:
	$(CARGO) bench -p clarion-bench

## End-to-end load generator against a running `clarion serve` (see docs/benchmarks.md).
loadgen:
	$(CARGO) run --release -p clarion-bench --bin loadgen -- --help

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
