#!/usr/bin/env bash
# Instructions per request, counted by valgrind (cachegrind), for the iris model's work
# without HTTP: tract run natively, one row per request (`native`), and the guest's batched
# path at batch sizes 16, 8 and 4 (`guest/16`...: CSV in, `invoke-batch`, wasi-nn on tract,
# JSON out). Each figure is the difference between two runs of
# host/runtime/examples/instructions.rs with different repeat counts, divided by the extra
# requests, so start-up cancels out. Counts do not move with a shared machine's load the way
# times do. Start-up compiles on parallel threads, and their total work varies by about 2
# million instructions from run to run, so the default repeat counts keep the
# per-request figures within a few hundred instructions. Counts weigh every instruction
# alike (a cache miss or a `rep movsb` byte counts as much as an add), so they complement
# the timed benchmarks and do not replace them.
#
#   host/bench/instructions.sh
#   IRIS_WASM=/path/to/old/iris.wasm host/bench/instructions.sh   # another build of the guest
#
# Environment: REPEATS="20 420" (the two repeat counts), BATCHES="16 8 4", SKIP_BUILD=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
command -v valgrind >/dev/null || { echo "instructions: needs valgrind" >&2; exit 1; }
read -r FEW MANY <<<"${REPEATS:-20 420}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml >&2
    cargo build --release -p plinth-runtime --example instructions >&2
fi
EXAMPLE="$TARGET_DIR/release/examples/instructions"

# Instructions the example runs with arguments "$@".
count() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        "$EXAMPLE" "$@" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
per_request() {
    local mode="$1" batch="$2" few many
    few="$(count "$mode" "$FEW" "$batch")"
    many="$(count "$mode" "$MANY" "$batch")"
    echo $(((many - few) / ((MANY - FEW) * batch)))
}

echo "| path | instructions per request |"
echo "|---|---:|"
echo "| native (tract, one row) | $(per_request native 1) |"
for batch in ${BATCHES:-16 8 4}; do
    echo "| guest, batches of $batch | $(per_request guest "$batch") |"
done
