#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what is
# missing (deploy/setup.sh), builds once, checks the trust boundary, runs
# every unit and end-to-end test with cargo-nextest; formatting and lints
# are checked on the way.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh --with-tests

echo "== trust boundary: what the host may depend on"
tests/trust-boundary.sh

echo "== formatting, lints and unused dependencies"
cargo fmt --all --check
tests/unused-deps.sh
cargo clippy -q --workspace --all-targets -- -D warnings

echo "== tests"
cargo nextest run --workspace --no-fail-fast "$@"
