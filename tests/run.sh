#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what is
# missing (deploy/setup.sh), builds once, checks the trust boundary, runs
# every unit and end-to-end test with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh

echo "== trust boundary: the host must not depend on MPC crates"
bad=$(cargo tree -q -p conclave-host -e normal --prefix none | grep -E '^(cggmp2[14]|cggmp2[14]-keygen|givre|key-share|generic-ec|paillier-zk|frost-core) ' | sort -u || true)
if [ -n "$bad" ]; then
  echo "host/ depends on MPC crates: $bad" >&2
  exit 1
fi
echo "ok: conclave-host has no MPC crate in its dependency tree"

echo "== tests"
cargo nextest run --workspace --no-fail-fast "$@"
