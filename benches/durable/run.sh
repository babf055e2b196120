#!/usr/bin/env bash
# Durable messaging end to end, in one session on this machine
# (docs/BENCHMARKS.md, "Durability end to end"):
#   1. saturation: tern serve (fsync durability, TLS) + tern-loadgen closed
#      loop -> full-cycle msgs/s;
#   2. half of it: open loop at saturation / 2 -> send->ServerAck and
#      send->delivered-receipt p50/p99, and the server's own fdatasync
#      latency histogram over exactly that run (/metrics before and after);
#   3. the disk alone: tern-log's commit_bench (raw write + fdatasync of
#      200-byte records) -> raw group-commit records/s and one commit's p99.
# Prints a summary with the ratios the durability issue sets targets on:
# durable records/s against raw group commit, and p99 send->ServerAck
# against the disk's fdatasync p99.
#
#   bash benches/durable/run.sh                    # build, then measure
#   bash benches/durable/run.sh --no-build --duration 10 --connections 1000
#   bash benches/durable/run.sh --no-build --divisors "2 16 64"   # open-loop rates: saturation / each
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNS=2000
DURATION=15
OPEN_DURATION=15
PROCS=2
BUILD=1
DIVISORS="2 4 8"
PORT=${TERN_PORT:-17800}
OPS_PORT=${OPS_PORT:-17801}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=""

usage() { sed -n "2,18p" "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --connections|-c) CONNS=${2:?}; shift 2 ;;
    --duration|-d) DURATION=${2:?}; shift 2 ;;
    --open-duration) OPEN_DURATION=${2:?}; shift 2 ;;
    --procs) PROCS=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --divisors) DIVISORS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
for tool in jq curl ss awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: $tool not found" >&2; exit 2; }
done

if [[ $BUILD == 1 ]]; then
  cargo build --release -p tern-engine --bin tern
  cargo build --release -p tern-loadgen
  cargo build --release -p tern-log --example commit_bench
fi
BIN=$TARGET_DIR/release
for b in tern tern-loadgen examples/commit_bench; do
  [[ -x $BIN/$b ]] || { echo "run.sh: $BIN/$b missing (drop --no-build)" >&2; exit 2; }
done
for port in "$PORT" "$OPS_PORT"; do
  if [[ -n $(ss -Hltn "sport = :$port") ]]; then
    echo "run.sh: port $port is in use; set TERN_PORT / OPS_PORT" >&2
    exit 2
  fi
done

OUT=${OUT:-$TARGET_DIR/durable-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
DATA=$OUT/tern-data
KEYS=$OUT/keys.jsonl
SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }
: >"$SUMMARY"

TERN_PID=""
cleanup() { [[ -n $TERN_PID ]] && { kill "$TERN_PID" 2>/dev/null || true; wait "$TERN_PID" 2>/dev/null || true; }; }
trap cleanup EXIT

"$BIN/tern" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
  --set ops.http_enabled=true --set "ops.http_listen=127.0.0.1:$OPS_PORT" \
  --limit pin_requests_per_source=1000000/1000 --limit pin_requests_per_phone=1000/1000 \
  --limit inbox_len_max=100000 >"$OUT/tern.log" 2>&1 &
TERN_PID=$!
for _ in $(seq 1 300); do
  [[ -n $(ss -Hltn "sport = :$PORT") ]] && break
  kill -0 "$TERN_PID" 2>/dev/null || { echo "run.sh: tern exited; see $OUT/tern.log" >&2; exit 2; }
  sleep 0.1
done
SHARDS=$(cat "$DATA/shards")

load() { # name, then loadgen flags
  local name=$1
  shift
  if ! "$BIN/tern-loadgen" --server "127.0.0.1:$PORT" --ca-cert "$DATA/tls/cert.pem" \
    --sms-outbox "$DATA/sms-outbox.jsonl" --keys-cache "$KEYS" -c "$CONNS" --procs "$PROCS" \
    --server-pid "$TERN_PID" --server-shards "$SHARDS" -q "$@" \
    --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1; then
    echo "run.sh: loadgen run $name failed:" >&2
    cat "$OUT/$name.txt" >&2
    # Also the exit status when a message was lost, duplicated or
    # misordered.
    exit 1
  fi
}
get() { jq -r "$2" "$OUT/$1.json"; }
# Cumulative fdatasync histogram buckets over all shards: "le count" lines.
fsync_buckets() {
  curl -sf "http://127.0.0.1:$OPS_PORT/metrics" |
    awk -F'[{}]' '/^tern_fsync_latency_seconds_bucket/ {
      split($2, kv, "le=\""); le = kv[2]; sub(/".*/, "", le);
      split($3, v, " "); sum[le] += v[1]
    } END { for (le in sum) print le, sum[le] }' | sort -g
}
# Upper bound of the bucket holding quantile q of (after - before).
fsync_quantile() { # q before after
  join <(sed 's/^+Inf/1e99/' "$2" | sort -k1,1) <(sed 's/^+Inf/1e99/' "$3" | sort -k1,1) |
    sort -g | awk -v q="$1" '{ le[NR] = $1; c[NR] = $3 - $2 } END {
      total = c[NR]; if (total == 0) { print "n/a"; exit }
      for (i = 1; i <= NR; i++) if (c[i] >= q * total) { printf "%.0f\n", le[i] * 1e6; exit } }'
}

say "durable messaging, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r)"
say "load at start: $(cut -d' ' -f1-3 /proc/loadavg); $CONNS connections, $PROCS loadgen workers, TLS, fsync; output $OUT"

load warmup -d 2
load closed -d "$DURATION"
SAT=$(get closed .throughput.messages_per_s)
say ""
say "saturation (closed loop, $DURATION s): $(printf '%.0f' "$SAT") full-cycle msgs/s, send->ServerAck p50/p99 $(get closed .latency_us.ack.p50)/$(get closed .latency_us.ack.p99) µs"

# Half of saturation, then a quarter and an eighth: on a 2-core box where
# the generator shares the cores, its open-loop cost per message is about
# twice its closed-loop cost, so half of the closed-loop rate can already
# fill the box; the lower rates show the latency of a box with room.
say ""
say "open loop, $OPEN_DURATION s each   achieved msgs/s   ServerAck p50/p99 µs   Deliver p50/p99 µs   receipt p50/p99 µs   server fdatasync p50/p99 µs (bucket bounds)   server cores   generator cores"
FIRST_ACK_P99=""
FIRST_FSYNC_P99=""
for div in $DIVISORS; do
  rate=$(awk -v s="$SAT" -v d="$div" 'BEGIN { printf "%d", s / d }')
  fsync_buckets >"$OUT/fsync-before-$div.txt"
  load "open-$div" --mode open --rate "$rate" -d "$OPEN_DURATION"
  fsync_buckets >"$OUT/fsync-after-$div.txt"
  n=open-$div
  f50=$(fsync_quantile 0.5 "$OUT/fsync-before-$div.txt" "$OUT/fsync-after-$div.txt")
  f99=$(fsync_quantile 0.99 "$OUT/fsync-before-$div.txt" "$OUT/fsync-after-$div.txt")
  gen_cores=$(awk -v c="$(get "$n" .loadgen.cpu_s)" -v t="$(get "$n" .throughput.run_seconds)" 'BEGIN { printf "%.2f", c / t }')
  say "$(printf '1/%d sat = %-7s %8.0f   %s/%s   %s/%s   %s/%s   %s/%s   %.2f   %s' "$div" "$rate" \
    "$(get "$n" .throughput.messages_per_s)" \
    "$(get "$n" .latency_us.ack.p50)" "$(get "$n" .latency_us.ack.p99)" \
    "$(get "$n" .latency_us.deliver.p50)" "$(get "$n" .latency_us.deliver.p99)" \
    "$(get "$n" .latency_us.receipt.p50)" "$(get "$n" .latency_us.receipt.p99)" \
    "$f50" "$f99" "$(get "$n" .server.cpu_cores_busy)" "$gen_cores")"
  if [[ -z $FIRST_ACK_P99 ]]; then
    FIRST_ACK_P99=$(get "$n" .latency_us.ack.p99)
    FIRST_FSYNC_P99=$f99
  fi
done
ACK_P99=$FIRST_ACK_P99
kill "$TERN_PID"
wait "$TERN_PID" 2>/dev/null || true
TERN_PID=""

"$BIN/examples/commit_bench" --dir "$OUT/commit-bench" --rounds 2 >"$OUT/commit_bench.txt" 2>&1
# Rows: | variant | records/sync | records/s | ... | commit p50 µs | commit p99 µs | ...
# "Raw" is std pwrite + fdatasync into a fallocated file, as the log does.
row() { awk -F'|' -v n="$1" '{ v = $2; gsub(/ /, "", v); b = $3; gsub(/ /, "", b) } v == "stdpwrite+fdatasync,fallocate" && b == n' "$OUT/commit_bench.txt" | head -1; }
RAW1=$(row 1)
RAW256=$(row 256)
DISK_P99=$(echo "$RAW1" | awk -F'|' '{ gsub(/[ ,]/, "", $7); print $7 }')
RAW256_RATE=$(echo "$RAW256" | awk -F'|' '{ gsub(/[ ,]/, "", $4); print $4 }')
say ""
say "disk alone (commit_bench, 200-byte records): one record per write+fdatasync p99 $DISK_P99 µs; 256 per sync $RAW256_RATE records/s"
# A full cycle logs 4 records: the message, its ack, the delivered
# receipt, the receipt's ack.
say "ratios: durable records/s at saturation (4 per full cycle) / raw group commit at 256 per sync = $(awk -v s="$SAT" -v r="$RAW256_RATE" 'BEGIN { if (r > 0) printf "%.2f", 4 * s / r; else print "n/a" }')"
say "        p99 send->ServerAck at the first rate (1/${DIVISORS%% *} of saturation) - disk fdatasync p99 (commit_bench) = $(awk -v a="$ACK_P99" -v d="$DISK_P99" 'BEGIN { if (d != "") printf "%+.0f µs", a - d; else print "n/a" }'); server's own fdatasync p99 then <= $FIRST_FSYNC_P99 µs"
