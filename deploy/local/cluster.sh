#!/usr/bin/env bash
# A local Conclave cluster on 127.0.0.1, in dev mode, state under .conclave/.
#   deploy/local/cluster.sh up [--nodes N]   start nats-server and N nodes (default 3), wait until ready
#   deploy/local/cluster.sh down             stop everything (state is kept; `up` reuses it)
#   deploy/local/cluster.sh status           show the nodes as the cluster sees them
#   deploy/local/cluster.sh wait-primes      wait until every node has Paillier primes ready
#   deploy/local/cluster.sh reset            stop and delete all state
# After `up`, `target/debug/conclave ...` run from the repository root needs no flags:
# it reads .conclave/client.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STATE=$ROOT/.conclave
BIN=${CONCLAVE_BIN:-$ROOT/target/debug}
NATS_PORT=${CONCLAVE_NATS_PORT:-14222}
HTTP_BASE=${CONCLAVE_HTTP_BASE:-19100}

die() { echo "cluster: $*" >&2; exit 1; }

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() { # start NAME PIDFILE LOG CMD...
  local name=$1 pidfile=$2 log=$3; shift 3
  if running "$pidfile"; then return; fi
  nohup "$@" >>"$log" 2>&1 &
  echo $! >"$pidfile"
  echo "cluster: started $name (pid $!)"
}

stop() { # stop PIDFILE
  if running "$1"; then kill "$(cat "$1")" 2>/dev/null || true; fi
  rm -f "$1"
}

node_count() { cat "$STATE/nodes" 2>/dev/null || echo 0; }

init_state() {
  local n=$1
  mkdir -p "$STATE/nats"
  [ -f "$STATE/initiator.key" ] || "$BIN/conclave" initiator new --out "$STATE/initiator.key" >"$STATE/initiator.pub"
  local initiator; initiator=$(cat "$STATE/initiator.pub")
  cat >"$STATE/nats/nats.conf" <<CONF
listen: 127.0.0.1:$NATS_PORT
max_payload: 8MB
jetstream { store_dir: "$STATE/nats/data" }
CONF
  cat >"$STATE/client.toml" <<CONF
nats_urls = ["nats://127.0.0.1:$NATS_PORT"]
initiator_key = "initiator.key"
CONF
  local roster="["
  for i in $(seq 1 "$n"); do
    local d=$STATE/node-$i
    mkdir -p "$d"
    cat >"$d/enclave.toml" <<CONF
node_id = "node-$i"
mode = "dev"
link = "unix:$d/enclave.sock"
state_dir = "$d/enclave"
roster = "$STATE/roster.json"
initiators = ["$initiator"]
CONF
    cat >"$d/host.toml" <<CONF
node_id = "node-$i"
link = "unix:$d/enclave.sock"
nats_urls = ["nats://127.0.0.1:$NATS_PORT"]
store_dir = "$d/store"
http_addr = "127.0.0.1:$((HTTP_BASE + i))"
CONF
    local identity; identity=$("$BIN/conclave-enclave" init --config "$d/enclave.toml")
    [ "$i" -gt 1 ] && roster+=","
    roster+="$identity"
  done
  echo "$roster]" >"$STATE/roster.json"
  echo "$n" >"$STATE/nodes"
}

start_node() {
  local i=$1 d=$STATE/node-$1
  [ -f "$d/enclave.toml" ] || die "node $i does not exist"
  start "enclave node-$i" "$d/enclave.pid" "$d/enclave.log" "$BIN/conclave-enclave" run --config "$d/enclave.toml"
  start "host node-$i" "$d/host.pid" "$d/host.log" "$BIN/conclave-host" run --config "$d/host.toml"
}

stop_node() { # kill -9: an abrupt failure, as a crash would be
  local d=$STATE/node-$1
  for p in "$d/host.pid" "$d/enclave.pid"; do
    if running "$p"; then kill -9 "$(cat "$p")" 2>/dev/null || true; fi
    rm -f "$p"
  done
  echo "cluster: node-$1 killed"
}

wait_ready() {
  local n=$1 deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    local ready
    ready=$("$BIN/conclave" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ready"])' 2>/dev/null || echo 0)
    if [ "$ready" -ge "$n" ]; then echo "cluster: $ready of $n nodes ready"; return; fi
    sleep 0.5
  done
  die "nodes not ready after 120 s; see $STATE/node-*/*.log"
}

cmd=${1:-}; shift || true
case "$cmd" in
  up)
    n=3
    while [ $# -gt 0 ]; do
      case "$1" in --nodes) n=$2; shift 2 ;; *) die "unknown option $1" ;; esac
    done
    [ "$n" -ge 2 ] || die "--nodes must be at least 2"
    [ -x "$BIN/conclave-enclave" ] || die "binaries missing in $BIN: run deploy/setup.sh"
    existing=$(node_count)
    if [ "$existing" = 0 ]; then init_state "$n"; elif [ "$existing" != "$n" ]; then
      die "state for $existing nodes exists in $STATE; use '$0 reset' first"
    fi
    export CONCLAVE_CONFIG=$STATE/client.toml
    start nats-server "$STATE/nats/pid" "$STATE/nats/log" nats-server -js -c "$STATE/nats/nats.conf"
    for i in $(seq 1 "$n"); do start_node "$i"; done
    wait_ready "$n"
    ;;
  down)
    for i in $(seq 1 "$(node_count)"); do stop "$STATE/node-$i/host.pid"; stop "$STATE/node-$i/enclave.pid"; done
    stop "$STATE/nats/pid"
    echo "cluster: stopped"
    ;;
  wait-primes)
    # A fresh node generates safe primes in the background (a minute or two
    # on 2 cores); a new committee's first ECDSA keygen needs them.
    export CONCLAVE_CONFIG=$STATE/client.toml
    deadline=$((SECONDS + 900))
    until "$BIN/conclave" status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["nodes"] and all(n["primes_ready"] for n in s["nodes"]) else 1)'; do
      [ $SECONDS -lt $deadline ] || die "primes not ready after 900 s"
      sleep 1
    done
    echo "cluster: every node has Paillier primes ready"
    ;;
  stop-node) stop_node "${1:?node number}" ;;
  start-node) start_node "${1:?node number}" ;;
  status) CONCLAVE_CONFIG=$STATE/client.toml "$BIN/conclave" status "$@" ;;
  reset) "$0" down || true; rm -rf "$STATE"; echo "cluster: state deleted" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
