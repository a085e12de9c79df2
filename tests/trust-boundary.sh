#!/usr/bin/env bash
# The host must never link code that can hold a plaintext share. Checked
# from the dependency graph, failing closed (a `cargo tree` that fails
# fails the check):
# 1. the host's direct dependencies are exactly those allowed here (adding
#    one is a reviewed change of this list);
# 2. nothing in its whole tree is an MPC crate or the signer.
set -euo pipefail
cd "$(dirname "$0")/.."

ALLOWED_DIRECT="async-nats base64 bytes clap conclave-proto futures hex http-body-util hyper hyper-util serde serde_json thiserror tokio tokio-rustls toml tracing tracing-subscriber"
FORBIDDEN='^(cggmp2[14]|cggmp2[14]-keygen|givre|key-share|generic-ec|generic-ec-core|paillier-zk|fast-paillier|frost-core|round-based|conclave-enclave)$'

direct=$(cargo tree -q -p conclave-host -e normal --depth 1 --prefix none) || { echo "trust boundary: cargo tree failed" >&2; exit 1; }
whole=$(cargo tree -q -p conclave-host -e normal --prefix none) || { echo "trust boundary: cargo tree failed" >&2; exit 1; }
[ -n "$whole" ] || { echo "trust boundary: cargo tree printed nothing" >&2; exit 1; }

bad=0
for crate in $(echo "$direct" | awk '$1 != "conclave-host" {print $1}' | sort -u); do
  case " $ALLOWED_DIRECT " in
    *" $crate "*) ;;
    *) echo "trust boundary: conclave-host depends on $crate, which tests/trust-boundary.sh does not allow" >&2; bad=1 ;;
  esac
done
forbidden=$(echo "$whole" | awk '{print $1}' | sort -u | grep -E "$FORBIDDEN" || true)
if [ -n "$forbidden" ]; then
  echo "trust boundary: conclave-host's tree contains $(echo $forbidden)" >&2
  bad=1
fi
[ "$bad" = 0 ] || exit 1
echo "ok: conclave-host depends only on allowed crates, and on no MPC crate ($(echo "$whole" | awk '{print $1}' | sort -u | wc -l) crates checked)"
