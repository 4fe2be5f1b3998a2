#!/usr/bin/env bash
# Plinth's HTTP benchmark, in one go: the iris model served natively (axum + tract, no Wasm:
# `native-iris`) against the same model served by `plinth serve` through its Wasm plugin,
# on an endpoint with one variant (iris1), one with two variants weighted 1:1 (iris2), and
# the same two that batch queued requests (iris1b and iris2b: max_batch_size = 16, and one
# instance per variant, since the server is pinned to one core and so has one worker thread:
# a second instance there only splits the batches).
# For each connection count, `loadgen` (closed loop, keep-alive) loads each target for the
# same time, and a Markdown table compares them, with each server's CPU time per request
# (from /proc; the steadier figure on a shared machine). With ROUNDS > 1 the targets are
# loaded in turn that many times, and the table shows medians; the ratio is the median of
# the per-round ratios (each round's runs are close in time, so most of a shared machine's
# drift cancels), with, from 6 rounds on, its 95% confidence interval in brackets
# (distribution-free: order statistics of the rounds' ratios) and their range in
# parentheses. On a virtual machine the main noise is CPU time its hypervisor gives to other
# guests (steal, in /proc/stat), which takes a server's core away mid-run: each run records
# the share of the machine's CPU time stolen while it ran, and a run with more than
# STEAL_MAX percent is left out of the medians, its round out of the ratios (the table's
# "rounds kept"). Steal is 0 on bare metal, where every round is kept. Finally GET /metrics
# from Plinth is saved (when it exists).
#
# With SHARED=1 the targets are instead loaded all at once, each from its own load generator
# and each served by its own server process, all pinned to the server core(s), which they
# share. Each server then gets a share of the same core over the same seconds, so a shared
# machine's drift hits all of them alike and the per-round ratios barely move from round to
# round; but each server also runs on caches the others have just used, which costs the
# server with the larger working set more. Read the ratios as those of servers competing for
# one core.
#
#   host/bench/http-bench.sh                     # full run: 10 s per target, 2 s warm-up
#   DURATION=5 WARMUP=1 host/bench/http-bench.sh # shorter
#
# Environment (all optional):
#   DURATION=10 WARMUP=2        seconds measured / warmed up per run
#   CONNECTIONS="1 16 64"       connection counts
#   TARGETS="native iris1 iris2 iris1b iris2b"  what to load, in this order
#   ROUNDS=1                    rounds over the targets (per connection count)
#   STEAL_MAX=2                 the most steal (percent of all CPU time) a kept run may have
#   SERVER_CPUS=0 LOADGEN_CPUS=1  taskset CPU lists (pinning is skipped without taskset or
#                               with fewer than 2 CPUs; PIN=0 turns it off)
#   SERVER_THREADS=1            tokio workers of native-iris (Plinth gets one per CPU it may
#                               use, so 1 when pinned to one core)
#   LOADGEN_THREADS=1           tokio workers of loadgen
#   SHARED=0                    1: load all targets at once, one server process each (above)
#   SKIP_BUILD=1                use the binaries already built
#   PLINTH_BIN=<target>/release/plinth  another plinth binary (e.g. target/debug/plinth, with
#                               SKIP_BUILD=1, when a release build is not at hand)
#   OUT_DIR=<target>/http-bench where results.jsonl, table.md and metrics.txt go
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-1 16 64}"
ROUNDS="${ROUNDS:-1}"
STEAL_MAX="${STEAL_MAX:-2}"
SERVER_THREADS="${SERVER_THREADS:-1}"
LOADGEN_THREADS="${LOADGEN_THREADS:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PLUGIN_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/plugins/target}"
OUT_DIR="${OUT_DIR:-$TARGET_DIR/http-bench}"
BIN="$TARGET_DIR/release"
PLINTH_BIN="${PLINTH_BIN:-$BIN/plinth}"
IRIS_WASM="$PLUGIN_TARGET_DIR/wasm32-wasip2/release/iris.wasm"
MODEL_DIR="$ROOT/examples/iris/model"

for tool in jq curl; do
    command -v "$tool" >/dev/null || { echo "http-bench: needs $tool on PATH" >&2; exit 1; }
done

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building (release)" >&2
    cargo build --release -p plinth-server -p plinth-bench -p plinth-loadgen >&2
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml >&2
fi
for f in "$PLINTH_BIN" "$BIN/native-iris" "$BIN/loadgen" "$IRIS_WASM"; do
    [[ -f "$f" ]] || { echo "http-bench: $f is missing (build it, or drop SKIP_BUILD)" >&2; exit 1; }
done

BENCH=http-bench
# shellcheck source=host/bench/lib.sh
source "$ROOT/host/bench/lib.sh"

# One endpoint and its config, named alike: endpoint NAME INSTANCES MAX_BATCH VARIANT...
# (each variant serves the iris model with INSTANCES instances; weights 1:1).
endpoint() {
    local name="$1" instances="$2" batch="$3" variant
    shift 3
    printf '\n[[CreateEndpointConfig]]\nEndpointConfigName = "%s"\n' "$name"
    for variant in "$@"; do
        printf '\n[[CreateEndpointConfig.ProductionVariants]]\nVariantName = "%s"\n' "$variant"
        printf 'ModelName = "iris"\nInitialInstanceCount = %s\n' "$instances"
        printf 'InitialVariantWeight = 1.0\nPlinthMaxBatchSize = %s\n' "$batch"
    done
    printf '\n[[CreateEndpoint]]\nEndpointName = "%s"\nEndpointConfigName = "%s"\n' "$name" "$name"
}
{
    cat <<TOML
[[CreateModel]]
ModelName = "iris"
PrimaryContainer = { Image = "$IRIS_WASM", ModelDataUrl = "$MODEL_DIR" }
TOML
    endpoint iris1 2 1 A
    endpoint iris2 2 1 A B
    endpoint iris1b 1 16 A
    endpoint iris2b 1 16 A B
} >"$WORK/plinth.toml"

echo "== starting servers (pinning: ${SERVER_PIN[*]:-none} / ${LOADGEN_PIN[*]:-none})" >&2
start_server native 30 "${SERVER_PIN[@]}" "$BIN/native-iris" \
    --model "$MODEL_DIR/model.onnx" --bind 127.0.0.1:0 --threads "$SERVER_THREADS"
NATIVE="$ADDR"
NATIVE_PID="${PIDS[-1]}"
read -r -a TARGETS <<<"${TARGETS:-native iris1 iris2 iris1b iris2b}"
declare -A URLS=([native]="http://$NATIVE/endpoints/iris/invocations")
declare -A SERVER_PID=([native]="$NATIVE_PID")
for target in "${TARGETS[@]}"; do
    [[ "$target" == native ]] && continue
    [[ "$target" =~ ^iris(1|2|1b|2b)$ ]] || { echo "http-bench: unknown target $target" >&2; exit 1; }
    # One Plinth for all targets, or with SHARED=1 one per target.
    if [[ -z "${PLINTH:-}" || "${SHARED:-0}" == 1 ]]; then
        start_server "plinth-$target" 300 "${SERVER_PIN[@]}" "$PLINTH_BIN" serve \
            --config "$WORK/plinth.toml" --bind 127.0.0.1:0 --data-dir "$WORK/data-$target"
        PLINTH="$ADDR"
        PLINTH_PID="${PIDS[-1]}"
        echo "plinth on $PLINTH" >&2
    fi
    URLS[$target]="http://$PLINTH/endpoints/$target/invocations"
    SERVER_PID[$target]="$PLINTH_PID"
done
echo "native-iris on $NATIVE" >&2

# One request each, so that a broken target fails here rather than as a table of errors.
for target in "${TARGETS[@]}"; do
    if ! answer="$(curl -sS --fail-with-body -H 'Content-Type: text/csv' \
        --data-binary '5.1,3.5,1.4,0.2' "${URLS[$target]}")"; then
        echo "http-bench: $target does not answer: $answer" >&2
        exit 1
    fi
    echo "$target: $answer" >&2
done

mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: >"$RESULTS"
# CPU time (user + system) a process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_S="$(getconf CLK_TCK)"
# Load TARGET ($1) with $2 connections, its result to $WORK/run-TARGET.json.
load() {
    "${LOADGEN_PIN[@]}" "$BIN/loadgen" --url "${URLS[$1]}" \
        --connections "$2" --duration "$DURATION" --warmup "$WARMUP" \
        --threads "$LOADGEN_THREADS" --json >"$WORK/run-$1.json"
}
# Append TARGET's ($1) result of round $2 to the results, with its server's CPU time per
# request: its CPU use over the whole run (warm-up included, $3 ticks) divided by the requests
# it served at the measured rate. Unlike req/s, this barely moves when a noisy machine steals
# time from the load generator.
record() {
    jq -c --arg target "$1" --argjson round "$2" --argjson ticks "$3" --argjson steal "$4" \
        --argjson hz "$TICKS_PER_S" --argjson seconds "$((DURATION + WARMUP))" \
        '. + {target: $target, round: $round, steal_percent: $steal,
              server_cpu_us_per_request:
                (if .rps > 0 then ($ticks / $hz / $seconds / .rps * 1e6 * 10 | round) / 10
                 else null end)}' \
        "$WORK/run-$1.json" >>"$RESULTS"
}
# The machine's CPU time taken by its hypervisor for other guests (steal), and all its CPU
# time, in ticks (from /proc/stat; steal stays 0 on bare metal).
steal_and_total() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# Steal since "$1 $2" (an earlier steal_and_total), in percent of all CPU time, 1 decimal.
steal_since() {
    local s1 t1
    read -r s1 t1 < <(steal_and_total)
    awk -v s="$((s1 - $1))" -v t="$((t1 - $2))" 'BEGIN {printf "%.1f", (t > 0 ? 100 * s / t : 0)}'
}
declare -A BEFORE
for connections in $CONNECTIONS; do
    for round in $(seq "$ROUNDS"); do
        if [[ "${SHARED:-0}" == 1 ]]; then
            echo "== ${TARGETS[*]} at once, $connections connection(s) each, ${DURATION}s, round $round/$ROUNDS" >&2
            loaders=()
            read -r steal0 total0 < <(steal_and_total)
            for target in "${TARGETS[@]}"; do
                BEFORE[$target]="$(cpu_ticks "${SERVER_PID[$target]}")"
                load "$target" "$connections" &
                loaders+=("$!")
            done
            wait "${loaders[@]}"
            steal="$(steal_since "$steal0" "$total0")"
            for target in "${TARGETS[@]}"; do
                record "$target" "$round" \
                    "$(($(cpu_ticks "${SERVER_PID[$target]}") - BEFORE[$target]))" "$steal"
            done
            continue
        fi
        for target in "${TARGETS[@]}"; do
            echo "== $target, $connections connection(s), ${DURATION}s, round $round/$ROUNDS" >&2
            before="$(cpu_ticks "${SERVER_PID[$target]}")"
            read -r steal0 total0 < <(steal_and_total)
            load "$target" "$connections"
            record "$target" "$round" "$(($(cpu_ticks "${SERVER_PID[$target]}") - before))" \
                "$(steal_since "$steal0" "$total0")"
        done
    done
done

TABLE="$OUT_DIR/table.md"
{
    echo "| connections | target | rounds kept | req/s | p50 µs | p99 µs | ratio to native req/s | server CPU µs/request | non-2xx | errors | variants |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    jq -rs --arg order "${TARGETS[*]}" --argjson steal_max "$STEAL_MAX" "$JQ_MEDIAN"'
        def r2: (. * 100 | round) / 100;
        ($order | split(" ")) as $order
        | map(. + {quiet: ((.steal_percent // 0) <= $steal_max)})
        | (map(select(.target == "native")) | map({key: "\(.connections)/\(.round)", value: .})
            | from_entries) as $native
        | map(. as $run | $native["\($run.connections)/\($run.round)"] as $n
            | . + {ratio: (if $n != null and $n.rps > 0 and $n.quiet and $run.quiet
                           then $run.rps / $n.rps else null end)})
        | group_by([.connections, (.target as $t | $order | index($t))])
        | .[]
        | length as $rounds
        | map(select(.quiet)) as $kept
        | (map(.ratio) | map(select(. != null))) as $ratios
        | (if .[0].target == "native" then $kept | length else $ratios | length end) as $counted
        | [ .[0].connections, .[0].target, "\($counted)/\($rounds)" ]
          + (if ($kept | length) == 0 then ["-", "-", "-", "-", "-"]
             else [ ($kept | map(.rps) | median | round),
                    ($kept | map(.latency_us.p50) | median | round),
                    ($kept | map(.latency_us.p99) | median | round),
                    (if .[0].target == "native" then "1"
                     elif ($ratios | length) == 0 then "-"
                     else ($ratios | median | r2 | tostring)
                          + ($ratios | median_ci
                             | if . == null then "" else " [\(.[0] | r2), \(.[1] | r2)]" end)
                          + (if ($ratios | length) > 1
                             then " (\($ratios | min | r2)-\($ratios | max | r2))" else "" end)
                     end),
                    ($kept | map(.server_cpu_us_per_request) | map(select(. != null)) | median
                     | if . == null then "-" else (. * 10 | round) / 10 end) ]
             end)
          + [ (map(.non_2xx) | add), (map(.errors) | add),
              (map(.variants // {} | to_entries) | add | group_by(.key)
               | map("\(.[0].key)=\(map(.value) | add)") | join(" ")) ]
        | "| " + (map(tostring) | join(" | ")) + " |"' "$RESULTS"
} >"$TABLE"
echo
echo "plinth: $PLINTH_BIN. Duration ${DURATION}s per run after ${WARMUP}s warm-up, $ROUNDS round(s); medians of the runs with at most ${STEAL_MAX}% of the CPU time stolen (rounds kept); a ratio is the median of the kept rounds' ratios, [its 95% confidence interval] from 6 rounds, (their range)$([[ "${SHARED:-0}" == 1 ]] && echo ", targets loaded at once on shared cores"); server ${SERVER_PIN[*]:-unpinned}, loadgen ${LOADGEN_PIN[*]:-unpinned}; $(nproc) CPUs."
echo
cat "$TABLE"

# (With SHARED=1, the metrics of the last target's server.)
if [[ -n "${PLINTH:-}" ]]; then
    status="$(curl -sS -o "$WORK/metrics.txt" -w '%{http_code}' "http://$PLINTH/metrics" || true)"
    echo
    if [[ "$status" == 200 ]]; then
        cp "$WORK/metrics.txt" "$OUT_DIR/metrics.txt"
        echo "Plinth metrics: $OUT_DIR/metrics.txt"
    else
        echo "Plinth's GET /metrics answered HTTP $status; not saved."
    fi
fi
echo "Results: $RESULTS, $TABLE"
