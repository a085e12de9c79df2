#!/usr/bin/env bash
# The main job: set up, start a 3-node 2-of-3 cluster, create an ECDSA and an
# EdDSA wallet, sign with each, print the verified results.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/setup.sh
deploy/local/cluster.sh up --nodes 3
export CONCLAVE_CONFIG=$PWD/.conclave/client.toml
conclave=target/debug/conclave
suffix=$(date +%s)

echo; echo "== ECDSA (CGGMP24, secp256k1), 2-of-3 =="
echo "Waiting for each node's Paillier primes (generated once, in the background, on a node's first start)..."
deploy/local/cluster.sh wait-primes
echo "The first ECDSA wallet of a committee also generates the committee's aux info (about 30 s, once)."
$conclave keygen --wallet "demo-ecdsa-$suffix" --scheme ecdsa --threshold 2
$conclave sign --wallet "demo-ecdsa-$suffix" --scheme ecdsa --message-hex "$(printf 'pay 1 BTC to Alice' | od -An -tx1 | tr -d ' \n')"
$conclave sign --wallet "demo-ecdsa-$suffix" --scheme ecdsa --digest-hex "$(printf '%064x' 42)" --path m/0/7

echo; echo "== EdDSA (FROST, ed25519), 2-of-3 =="
$conclave keygen --wallet "demo-eddsa-$suffix" --scheme eddsa --threshold 2
$conclave sign --wallet "demo-eddsa-$suffix" --scheme eddsa --message-hex "$(printf 'pay 1 SOL to Bob' | od -An -tx1 | tr -d ' \n')"

echo; echo "Every signature above was verified by the client before it was printed."
echo "The cluster is still running: deploy/local/cluster.sh status | down"
