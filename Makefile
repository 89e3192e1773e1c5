# noodle-migrate: `make demo` runs the engine on a seeded demo gallery,
# `make test` runs every check. Both bring up what they need (PostgreSQL,
# the loopback S3 server) on a fresh Debian machine.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
export RUN_DIR ?= $(CURDIR)/.run
export S3_PORT ?= 8014
export TEST_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/postgres
export TEST_S3_ENDPOINT ?= http://127.0.0.1:$(S3_PORT)
export TEST_S3_ACCESS_KEY ?= nmtest
export TEST_S3_SECRET_KEY ?= nmtestsecret

.PHONY: all build services postgres s3 tools test lint demo bench bench-servers bench-scale bench-scale-out clean-test-dbs

all: build

build:
	cargo build --bins --examples

services: postgres s3

tools:
	@scripts/ensure-tools.sh

postgres:
	@scripts/ensure-postgres.sh

s3:
	@scripts/ensure-s3.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets --features failpoints -- -D warnings

# Databases left by interrupted test runs.
clean-test-dbs: postgres
	@psql "$(TEST_DATABASE_URL)" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'nm\_test\_%'" \
	  | while read -r db; do psql "$(TEST_DATABASE_URL)" -qc "DROP DATABASE IF EXISTS \"$$db\" WITH (FORCE)"; done

# The crash points are compiled in for the tests only (see src/failpoint.rs).
test: services tools lint clean-test-dbs
	cargo test --tests --features failpoints

demo: services build
	@scripts/demo.sh

# Speed and memory against rclone and aws s3 sync, on s3s-fs and Garage;
# writes bench/results.md and bench/results-scale.md.
bench: services
	@scripts/ensure-bench-tools.sh
	@bench/run.sh

# Only the transfer rows, against s3s-fs and Garage (installed on first
# use); writes them into bench/results.md.
bench-servers: services
	@scripts/ensure-bench-tools.sh
	@bench/servers.sh

# Only the scale rows (a whole library each way, about an hour at 500,000
# files); writes bench/results-scale.md.
bench-scale: services
	@scripts/ensure-bench-tools.sh
	@bench/scale-report.sh

# Only the scale-out rows (one process against three, with and without a
# remote bucket's latency); writes them into bench/results.md.
bench-scale-out: services
	@scripts/ensure-bench-tools.sh
	@bench/scale-out.sh
