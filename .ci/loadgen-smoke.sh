#!/usr/bin/env bash
# Loadgen smoke run with the shipped binaries, as an operator would run it:
# tern serve (release, TLS, fsync durability) on loopback, tern-loadgen with
# 200 connections for a few seconds in 2 worker processes. Fails (non-zero)
# if any acknowledged message is lost, duplicated or misordered, or a
# receipt is missing (tern-loadgen's own check), or if the server dies.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/tern-ci-smoke.XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --locked -p tern-engine --bin tern -p tern-loadgen --bin tern-loadgen
target/release/tern serve --listen 127.0.0.1:0 --data-dir "$work/data" \
  --set ops.http_listen=127.0.0.1:0 \
  --limit pin_requests_per_source=1000000/1000 \
  --limit pin_requests_per_phone=1000/1000 \
  2> "$work/server.log" &
server_pid=$!
addr=""
for _ in $(seq 1 300); do
  addr=$(sed -n 's/^tern: listening on \([0-9.:]*\).*/\1/p' "$work/server.log" | head -1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }

target/release/tern-loadgen --server "$addr" --ca-cert "$work/data/tls/cert.pem" \
  --sms-outbox "$work/data/sms-outbox.jsonl" --keys-cache "$work/keys.jsonl" \
  --connections 200 --duration 4 --procs 2 --offline-fraction 0.1 --read-receipts \
  --server-pid "$server_pid" --server-shards 2 --json "$work/report.json"
kill -0 "$server_pid" || { echo "server died during the run"; exit 1; }
python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"], "loadgen check failed"
print(f"loadgen smoke: ok, {r['throughput']['messages_per_s']:.0f} msgs/s over {r['throughput']['run_seconds']:.1f} s")
PY
