#!/usr/bin/env bash
# Does a slow shadow variant slow production down? One Plinth server, two endpoints with the
# same production variant: `plain` (no shadow) and `shadowed` (plus a shadow variant that is
# SLOWDOWN times slower and receives a copy of every request). `loadgen` loads each endpoint
# in turn, ROUNDS times, alternating so that drift on a shared machine hits both alike, and a
# Markdown table gives the medians over rounds of production's p50/p99 latency and req/s on
# each, with their ratio. The shadow's counts (sampled, dropped, compared) are printed after.
#
# The models are the fault-injection plugin with a fixed delay (FAULT_DELAY_MS), so the
# shadow is slow without taking CPU from production: what is measured is whether
# production waits for the shadow anywhere, not how two models share cores.
#
#   host/bench/shadow-bench.sh                     # 5 rounds of 5 s
#   ROUNDS=3 DURATION=3 host/bench/shadow-bench.sh # shorter
#
# Environment (all optional):
#   DELAY_MS=2 SLOWDOWN=10     production's delay, and how many times slower the shadow is
#   CONNECTIONS=4              concurrent connections (production has as many instances)
#   ROUNDS=5 DURATION=5 WARMUP=1
#   SKIP_BUILD=1, PLINTH_BIN, PIN, SERVER_CPUS, LOADGEN_CPUS, OUT_DIR: as http-bench.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

DELAY_MS="${DELAY_MS:-2}"
SLOWDOWN="${SLOWDOWN:-10}"
CONNECTIONS="${CONNECTIONS:-4}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PLUGIN_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/plugins/target}"
OUT_DIR="${OUT_DIR:-$TARGET_DIR/shadow-bench}"
BIN="$TARGET_DIR/release"
PLINTH_BIN="${PLINTH_BIN:-$BIN/plinth}"
FAULTS_WASM="$PLUGIN_TARGET_DIR/wasm32-wasip2/release/faults.wasm"

for tool in jq curl; do
    command -v "$tool" >/dev/null || { echo "shadow-bench: needs $tool on PATH" >&2; exit 1; }
done
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building (release)" >&2
    cargo build --release -p plinth-server -p plinth-loadgen >&2
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml >&2
fi
for f in "$PLINTH_BIN" "$BIN/loadgen" "$FAULTS_WASM"; do
    [[ -f "$f" ]] || { echo "shadow-bench: $f is missing (build it, or drop SKIP_BUILD)" >&2; exit 1; }
done

BENCH=shadow-bench
# shellcheck source=host/bench/lib.sh
source "$ROOT/host/bench/lib.sh"

SHADOW_DELAY_MS=$((DELAY_MS * SLOWDOWN))
cat >"$WORK/plinth.toml" <<TOML
[[CreateModel]]
ModelName = "production"
PrimaryContainer = { Image = "$FAULTS_WASM", Environment = { FAULT_DELAY_MS = "$DELAY_MS", FAULT_REPLY = "answer" } }

[[CreateEndpointConfig]]
EndpointConfigName = "plain"

[[CreateEndpointConfig.ProductionVariants]]
VariantName = "production"
ModelName = "production"
InitialInstanceCount = $CONNECTIONS

[[CreateEndpoint]]
EndpointName = "plain"
EndpointConfigName = "plain"
TOML

start_server plinth 300 "${SERVER_PIN[@]}" "$PLINTH_BIN" serve \
    --config "$WORK/plinth.toml" --bind 127.0.0.1:0 --data-dir "$WORK/data"
PLINTH="$ADDR"
export PLINTH_ENDPOINT_URL="http://$PLINTH"
api() { "$PLINTH_BIN" api "$@" >/dev/null; }
# The shadowed endpoint, through the API (the deployment file has no shadows).
api CreateModel "{\"ModelName\": \"slow-shadow\", \"PrimaryContainer\": {\"Image\": \"$FAULTS_WASM\",
    \"Environment\": {\"FAULT_DELAY_MS\": \"$SHADOW_DELAY_MS\", \"FAULT_REPLY\": \"answer\"}}}"
api CreateEndpointConfig "{\"EndpointConfigName\": \"shadowed\",
    \"ProductionVariants\": [{\"VariantName\": \"production\", \"ModelName\": \"production\", \"InitialInstanceCount\": $CONNECTIONS}],
    \"ShadowProductionVariants\": [{\"VariantName\": \"shadow\", \"ModelName\": \"slow-shadow\", \"InitialInstanceCount\": 1,
        \"PlinthMaxQueueLength\": 8, \"PlinthSamplingPercentage\": 100}]}"
api CreateEndpoint '{"EndpointName": "shadowed", "EndpointConfigName": "shadowed"}'
for _ in $(seq 1 600); do
    status="$("$PLINTH_BIN" api DescribeEndpoint '{"EndpointName": "shadowed"}' | jq -r .EndpointStatus)"
    [[ "$status" == InService ]] && break
    sleep 0.1
done
[[ "$status" == InService ]] || { echo "shadow-bench: the shadowed endpoint is $status" >&2; exit 1; }
echo "plinth on $PLINTH; production ${DELAY_MS} ms, shadow ${SHADOW_DELAY_MS} ms" >&2

mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
    for target in plain shadowed; do
        echo "== round $round: $target, $CONNECTIONS connection(s), ${DURATION}s" >&2
        "${LOADGEN_PIN[@]}" "$BIN/loadgen" --url "http://$PLINTH/endpoints/$target/invocations" \
            --content-type text/plain --body request \
            --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json |
            jq -c --arg target "$target" --argjson round "$round" '. + {target: $target, round: $round}' >>"$RESULTS"
    done
done

TABLE="$OUT_DIR/table.md"
{
    echo "| endpoint | req/s | p50 µs | p99 µs | p50 ratio to plain | p99 ratio to plain | non-2xx | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    # Medians over rounds; the ratios are medians of each round's shadowed/plain ratio (the
    # two ran back to back), which cancels most of the drift of a shared machine.
    jq -rs '
        def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                           else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def ratio(f): group_by(.round)
            | map((map(select(.target == "shadowed"))[0] | f) / (map(select(.target == "plain"))[0] | f))
            | median | . * 100 | round / 100;
        . as $all
        | group_by(.target)
        | map({target: .[0].target, rps: (map(.rps) | median),
               p50: (map(.latency_us.p50) | median), p99: (map(.latency_us.p99) | median),
               non_2xx: (map(.non_2xx) | add), errors: (map(.errors) | add)})
        | sort_by(.target != "plain")
        | .[]
        | [ .target, (.rps | round), .p50, .p99,
            (if .target == "plain" then 1 else ($all | ratio(.latency_us.p50)) end),
            (if .target == "plain" then 1 else ($all | ratio(.latency_us.p99)) end),
            .non_2xx, .errors ]
        | "| " + (map(tostring) | join(" | ")) + " |"' "$RESULTS"
} >"$TABLE"
echo
echo "plinth: $PLINTH_BIN. $ROUNDS rounds of ${DURATION}s per endpoint (medians), $CONNECTIONS connections; production ${DELAY_MS} ms, shadow ${SHADOW_DELAY_MS} ms at 100% sampling, 1 instance, queue 8; server ${SERVER_PIN[*]:-unpinned}, loadgen ${LOADGEN_PIN[*]:-unpinned}; $(nproc) CPUs."
echo
cat "$TABLE"
echo
"$PLINTH_BIN" api DescribeShadowVariants '{"EndpointName": "shadowed"}' |
    jq -c '.ShadowProductionVariants[] | {VariantName, Sampled, Dropped, Invocations, Errors, Compared, ExactAgreement}'
echo "Results: $RESULTS, $TABLE"
