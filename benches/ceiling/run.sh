#!/usr/bin/env bash
# Tern against its raw forwarding ceiling, and TLS handshakes/s against a
# bare rustls acceptor, in one session on this machine (docs/BENCHMARKS.md,
# "Raw forwarding ceiling" and "TLS handshakes/s").
#
#   bash benches/ceiling/run.sh                 # build, then 3 alternating rounds of each comparison
#   bash benches/ceiling/run.sh --rounds 2 --duration 10 --no-build
#   bash benches/ceiling/run.sh --plaintext     # both servers without TLS (no handshake part)
#   bash benches/ceiling/run.sh --parts handshake   # any of closed,open,handshake
#
# Starts `tern serve` (fresh data dir, PIN limits raised) and `tern-ceiling`
# (Tern's certificate, one port per core), both pinned one executor per
# core, and drives both with the same tern-loadgen flags, Tern then ceiling
# in each round, so slow spells of the shared machine hit both alike:
#   1. closed loop (--outstanding per sender until the receipt): msgs/s and
#      server CPU per message, ratio Tern / ceiling;
#   2. open loop at --rate: deliver and receipt latency at the same load;
#   3. --mode handshake against Tern and a second tern-ceiling started with
#      --shared-port (every core on one SO_REUSEPORT port, as Tern's shards):
#      it accepts, handshakes and waits for a hello that never comes, a bare
#      rustls acceptor; handshakes/s and server CPU per handshake, ratios.
# Prints a summary (also in OUT/summary.txt); every report is kept as JSON
# in OUT. Servers started here are stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNS=2000
DURATION=20
PROCS=2
ROUNDS=3
RATE=8000
OPEN_DURATION=10
HS_CONNS=64
HS_DURATION=10
OUTSTANDING=8
BODY_BYTES=100
BUILD=1
PLAINTEXT=0
# Uncommon ports by default: tern serve and the ceiling both use
# SO_REUSEPORT, so a port another benchmark already listens on would be
# shared silently (checked below).
TERN_PORT=${TERN_PORT:-17443}
CEILING_PORT=${CEILING_PORT:-17600}
RUSTLS_PORT=${RUSTLS_PORT:-17700}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=""
PARTS=closed,open,handshake

usage() { sed -n '2,23p' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --connections|-c) CONNS=${2:?}; shift 2 ;;
    --duration|-d) DURATION=${2:?}; shift 2 ;;
    --procs) PROCS=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --open-duration) OPEN_DURATION=${2:?}; shift 2 ;;
    --hs-connections) HS_CONNS=${2:?}; shift 2 ;;
    --hs-duration) HS_DURATION=${2:?}; shift 2 ;;
    --outstanding) OUTSTANDING=${2:?}; shift 2 ;;
    --body-bytes) BODY_BYTES=${2:?}; shift 2 ;;
    --plaintext) PLAINTEXT=1; shift ;;
    --parts) PARTS=${2:?}; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

part() { [[ ,$PARTS, == *,$1,* ]]; }
if [[ $PLAINTEXT == 1 ]]; then
  # No TLS, no handshakes to count.
  PARTS=${PARTS//handshake/}
fi

for tool in jq ss awk; do
  command -v "$tool" >/dev/null 2>&1 || { echo "run.sh: $tool not found" >&2; exit 2; }
done

if [[ $BUILD == 1 ]]; then
  # Two builds: `--bin tern` would narrow the other packages to a `tern`
  # binary too.
  cargo build --release -p tern-engine --bin tern
  cargo build --release -p tern-loadgen -p tern-ceiling
fi
BIN=$TARGET_DIR/release
for b in tern tern-loadgen tern-ceiling; do
  [[ -x $BIN/$b ]] || { echo "run.sh: $BIN/$b missing (drop --no-build)" >&2; exit 2; }
done

CORES=$(nproc)
OUT=${OUT:-$TARGET_DIR/ceiling-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
DATA=$OUT/tern-data
KEYS=$OUT/keys.jsonl
rm -rf "$DATA" "$KEYS"

for port in "$TERN_PORT" "$RUSTLS_PORT" $(seq "$CEILING_PORT" $((CEILING_PORT + CORES - 1))); do
  if [[ -n $(ss -Hltn "sport = :$port") ]]; then
    echo "run.sh: port $port is already in use; set TERN_PORT / CEILING_PORT / RUSTLS_PORT" >&2
    exit 2
  fi
done

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

wait_listening() { # port, pid, what
  for _ in $(seq 1 300); do
    [[ -n $(ss -Hltn "sport = :$1") ]] && return 0
    kill -0 "$2" 2>/dev/null || { echo "run.sh: $3 exited; see $OUT/$3.log" >&2; exit 2; }
    sleep 0.1
  done
  echo "run.sh: $3 is not listening on port $1" >&2
  exit 2
}

TLS_SERVE=()
TLS_CEILING=()
TRUST=()
if [[ $PLAINTEXT == 1 ]]; then
  TLS_SERVE=(--insecure-plaintext)
  TLS_CEILING=(--insecure-plaintext)
  TRUST=(--insecure-plaintext)
fi

"$BIN/tern" serve --listen "127.0.0.1:$TERN_PORT" --data-dir "$DATA" "${TLS_SERVE[@]}" \
  --set ops.http_enabled=false \
  --limit pin_requests_per_source=1000000/1000 --limit pin_requests_per_phone=1000/1000 \
  --limit inbox_len_max=100000 >"$OUT/tern.log" 2>&1 &
TERN_PID=$!
PIDS+=("$TERN_PID")
wait_listening "$TERN_PORT" "$TERN_PID" tern
if [[ $PLAINTEXT == 0 ]]; then
  TLS_CEILING=(--cert "$DATA/tls/cert.pem" --key "$DATA/tls/key.pem")
  TRUST=(--ca-cert "$DATA/tls/cert.pem")
fi
"$BIN/tern-ceiling" --listen "127.0.0.1:$CEILING_PORT" --cores "$CORES" "${TLS_CEILING[@]}" \
  >"$OUT/ceiling.log" 2>&1 &
CEILING_PID=$!
PIDS+=("$CEILING_PID")
wait_listening "$((CEILING_PORT + CORES - 1))" "$CEILING_PID" ceiling
if part handshake; then
  "$BIN/tern-ceiling" --listen "127.0.0.1:$RUSTLS_PORT" --shared-port --cores "$CORES" \
    "${TLS_CEILING[@]}" >"$OUT/rustls.log" 2>&1 &
  RUSTLS_PID=$!
  PIDS+=("$RUSTLS_PID")
  wait_listening "$RUSTLS_PORT" "$RUSTLS_PID" rustls
fi

COMMON=(-c "$CONNS" --procs "$PROCS" --outstanding "$OUTSTANDING" --body-bytes "$BODY_BYTES"
  "${TRUST[@]}" -q)
TERN_ARGS=(--server "127.0.0.1:$TERN_PORT" --server-pid "$TERN_PID" --server-shards "$CORES"
  --keys-cache "$KEYS" --sms-outbox "$DATA/sms-outbox.jsonl")
CEILING_ARGS=(--target ceiling --server "127.0.0.1:$CEILING_PORT" --server-ports "$CORES"
  --server-pid "$CEILING_PID")

load() { # name, then loadgen flags
  local name=$1
  shift
  if ! "$BIN/tern-loadgen" "$@" --json "$OUT/$name.json" >"$OUT/$name.txt" 2>&1; then
    echo "run.sh: loadgen run $name failed:" >&2
    cat "$OUT/$name.txt" >&2
    exit 1
  fi
}
get() { jq -r "$2" "$OUT/$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
int() { printf "%.0f" "$1"; }

SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }
: >"$SUMMARY"
say "tern vs tern-ceiling, $(date -u +%Y-%m-%dT%H:%M:%SZ), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r)"
say "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "flags: -c $CONNS --procs $PROCS --outstanding $OUTSTANDING --body-bytes $BODY_BYTES $([[ $PLAINTEXT == 1 ]] && echo PLAINTEXT || echo TLS); closed $DURATION s, open $RATE/s $OPEN_DURATION s, handshakes -c $HS_CONNS $HS_DURATION s; $ROUNDS rounds"
say "output: $OUT"

# Warm-up, not counted: registers the users with Tern (keys cached) and
# pages both servers in.
if part closed || part open; then
  load warmup-tern "${COMMON[@]}" "${TERN_ARGS[@]}" -d 2
  load warmup-ceiling "${COMMON[@]}" "${CEILING_ARGS[@]}" -d 2
fi

CLOSED_RATIOS=""
CPU_RATIOS=""
if part closed; then
  say ""
  say "closed loop ($DURATION s per run)      msgs/s   server µs/msg  server cores   loadgen µs/msg"
  for r in $(seq 1 "$ROUNDS"); do
    load "closed-tern-$r" "${COMMON[@]}" "${TERN_ARGS[@]}" -d "$DURATION"
    load "closed-ceiling-$r" "${COMMON[@]}" "${CEILING_ARGS[@]}" -d "$DURATION"
    for who in tern ceiling; do
      n="closed-$who-$r"
      [[ $(get "$n" .ok) == true ]] || say "  WARNING: $n check failed (see $OUT/$n.txt)"
      say "$(printf '  round %d %-8s %14s %14.2f %14.2f %16.2f' "$r" "$who" \
        "$(int "$(get "$n" .throughput.messages_per_s)")" "$(get "$n" .server.cpu_us_per_message)" \
        "$(get "$n" .server.cpu_cores_busy)" "$(get "$n" .loadgen.cpu_us_per_message)")"
    done
    rr=$(ratio "$(get "closed-tern-$r" .throughput.messages_per_s)" "$(get "closed-ceiling-$r" .throughput.messages_per_s)")
    cr=$(ratio "$(get "closed-tern-$r" .server.cpu_us_per_message)" "$(get "closed-ceiling-$r" .server.cpu_us_per_message)")
    say "  round $r: Tern / ceiling msgs/s = $rr; server CPU per message Tern / ceiling = $cr"
    CLOSED_RATIOS+=" $rr"
    CPU_RATIOS+=" $cr"
  done
fi

if part open; then
  say ""
  say "open loop at $RATE msgs/s ($OPEN_DURATION s)   deliver p50 / p99 µs   receipt p50 / p99 µs   server µs/msg"
  for r in $(seq 1 "$ROUNDS"); do
    load "open-tern-$r" "${COMMON[@]}" "${TERN_ARGS[@]}" --mode open --rate "$RATE" -d "$OPEN_DURATION"
    load "open-ceiling-$r" "${COMMON[@]}" "${CEILING_ARGS[@]}" --mode open --rate "$RATE" -d "$OPEN_DURATION"
    for who in tern ceiling; do
      n="open-$who-$r"
      say "$(printf '  round %d %-8s %12s / %-8s %12s / %-8s %10.1f' "$r" "$who" \
        "$(get "$n" .latency_us.deliver.p50)" "$(get "$n" .latency_us.deliver.p99)" \
        "$(get "$n" .latency_us.receipt.p50)" "$(get "$n" .latency_us.receipt.p99)" \
        "$(get "$n" .server.cpu_us_per_message)")"
    done
  done
fi

HS_RATIOS=""
HS_CPU_RATIOS=""
if part handshake; then
  say ""
  say "TLS handshakes ($HS_DURATION s, $HS_CONNS at once)   handshakes/s   server µs/handshake   handshake p50 / p99 µs"
  for r in $(seq 1 "$ROUNDS"); do
    load "hs-tern-$r" --mode handshake -c "$HS_CONNS" --procs "$PROCS" "${TRUST[@]}" -q \
      --server "127.0.0.1:$TERN_PORT" --server-pid "$TERN_PID" -d "$HS_DURATION"
    load "hs-rustls-$r" --mode handshake -c "$HS_CONNS" --procs "$PROCS" "${TRUST[@]}" -q \
      --server "127.0.0.1:$RUSTLS_PORT" --server-pid "$RUSTLS_PID" -d "$HS_DURATION"
    for who in tern rustls; do
      n="hs-$who-$r"
      errs=$(get "$n" '[.errors[]] | add // 0')
      say "$(printf '  round %d %-8s %14s %18.1f %14s / %-8s errors %s' "$r" "$who" \
        "$(int "$(get "$n" .throughput.handshakes_per_s)")" "$(get "$n" .server.cpu_us_per_handshake)" \
        "$(get "$n" .latency_us.handshake.p50)" "$(get "$n" .latency_us.handshake.p99)" "$errs")"
    done
    hr=$(ratio "$(get "hs-tern-$r" .throughput.handshakes_per_s)" "$(get "hs-rustls-$r" .throughput.handshakes_per_s)")
    # Efficiency: bare rustls's CPU per handshake over Tern's (1.0 = as cheap).
    hc=$(ratio "$(get "hs-rustls-$r" .server.cpu_us_per_handshake)" "$(get "hs-tern-$r" .server.cpu_us_per_handshake)")
    say "  round $r: Tern / bare rustls handshakes/s = $hr; server CPU per handshake bare / Tern = $hc"
    HS_RATIOS+=" $hr"
    HS_CPU_RATIOS+=" $hc"
  done
fi

say ""
say "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
say "SUMMARY (median over $ROUNDS rounds)"
if part closed; then
  say "  closed loop msgs/s, Tern / ceiling:            $(echo "$CLOSED_RATIOS" | median)   (rounds:$CLOSED_RATIOS)"
  say "  server CPU per message, Tern / ceiling:        $(echo "$CPU_RATIOS" | median)   (rounds:$CPU_RATIOS)"
fi
if part handshake; then
  say "  handshakes/s, Tern / bare rustls:              $(echo "$HS_RATIOS" | median)   (rounds:$HS_RATIOS; target >= 0.90)"
  say "  server CPU per handshake, bare rustls / Tern:  $(echo "$HS_CPU_RATIOS" | median)   (rounds:$HS_CPU_RATIOS)"
fi
