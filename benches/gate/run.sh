#!/usr/bin/env bash
# Performance regression gate: instruction counts of fixed workloads under
# valgrind callgrind, compared with benches/gate/baseline.json.
#
#   bash benches/gate/run.sh              # build, measure, compare; exit 1 on a regression
#   bash benches/gate/run.sh --update     # measure and rewrite the baseline (commit it, say why)
#   bash benches/gate/run.sh --threshold-pct 5
#
# Exit status: 0 pass, 1 regression (or missing/changed workload, or no
# baseline), 2 usage or tool failure. See benches/gate/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASELINE=benches/gate/baseline.json
TARGET_DIR=${CARGO_TARGET_DIR:-target}
RESULTS=${TERN_GATE_RESULTS:-$TARGET_DIR/gate/results.json}
THRESHOLD_PCT=${TERN_GATE_THRESHOLD_PCT:-3}
# Each workload runs this many times; the smallest count is kept. Counts
# are exact for most workloads, but std's HashMap seeds SipHash randomly
# per process, so workloads with many hash-map keys move by up to ~0.3%
# between runs (probe sequences differ); the minimum of 3 is stable.
RUNS=${TERN_GATE_RUNS:-3}
UPDATE=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --update) UPDATE=(--update); shift ;;
    --threshold-pct) THRESHOLD_PCT=${2:?--threshold-pct needs a value}; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v valgrind >/dev/null 2>&1; then
  echo "run.sh: valgrind not found (apt-get install valgrind)" >&2
  exit 2
fi

start=$SECONDS
cargo build --release -p tern-benches --bin gate_workload
BIN=$TARGET_DIR/release/gate_workload
built=$SECONDS

mkdir -p "$(dirname "$RESULTS")"
LOG=$(mktemp)
OUT=$(mktemp)
trap 'rm -f "$LOG" "$OUT"' EXIT

PAIRS=()
while read -r name _; do
  best=""
  counts=()
  for ((run = 1; run <= RUNS; run++)); do
    # Only `gate_measure` is counted (--collect-atstart=no plus the
    # toggle): process start, workload set-up and exit are not.
    if ! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --collect-atstart=no --toggle-collect='*gate_measure*' \
        --log-file="$LOG" "$BIN" run "$name" >"$OUT" </dev/null; then
      echo "run.sh: workload $name failed under valgrind:" >&2
      cat "$LOG" "$OUT" >&2
      exit 2
    fi
    ir=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$LOG")
    iterations=$(sed -n 's/^workload=[a-z_]* iterations=\([0-9]*\) .*$/\1/p' "$OUT")
    if [[ -z "$ir" || "$ir" == 0 || -z "$iterations" ]]; then
      echo "run.sh: no instruction count for $name (toggle symbol gate_measure not found?)" >&2
      cat "$LOG" "$OUT" >&2
      exit 2
    fi
    counts+=("$ir")
    if [[ -z "$best" || "$ir" -lt "$best" ]]; then best=$ir; fi
  done
  echo "$name: Ir per run ${counts[*]} -> $best"
  PAIRS+=("$name=$best@$iterations")
done < <("$BIN" list)

"$BIN" report --baseline "$BASELINE" --results "$RESULTS" \
  --valgrind "$(valgrind --version)" --rustc "$(rustc -V)" \
  --threshold-pct "$THRESHOLD_PCT" "${UPDATE[@]}" "${PAIRS[@]}" && status=0 || status=$?
echo "gate: build $((built - start)) s, measure $((SECONDS - built)) s; results in $RESULTS"
exit "$status"
