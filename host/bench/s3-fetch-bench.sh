#!/usr/bin/env bash
# Fetching a model from S3: `plinth fetch` against boto3. An S3-compatible server (moto's,
# from .venv, without authentication; tests/python/s3_setup.py) holds a SIZE_MB MiB
# `model.tar.gz` (a random, so incompressible, `weights.bin` and the iris `model.onnx`) and a
# tiny one. Each round, in alternating order so that drift on a shared machine hits both
# alike, measures the wall time of
#   boto3:  `download_file` of model.tar.gz (a fresh Python process, as a user would run
#           it) and then `tar xzf` of it into an empty directory;
#   plinth: `plinth fetch s3://BUCKET/model.tar.gz --dest DIR` (fetch and unpack in one
#           streamed pass), with its peak RSS (`/usr/bin/time -f %M`, or else VmHWM polled
#           from /proc), and the peak RSS of `plinth fetch` of the tiny archive as the
#           baseline: what the process holds anyway, so that the difference is what the
#           download itself costs.
# Both unpack into the same file system; each result is checked against the original
# weights.bin (cmp), outside the timing. Prints the medians over rounds: boto3 and plinth
# seconds, the ratio plinth/boto3 (the median of each round's ratio), plinth's peak and
# baseline RSS and their difference.
#
#   host/bench/s3-fetch-bench.sh                        # 5 rounds, 100 MiB
#   ROUNDS=3 SIZE_MB=20 host/bench/s3-fetch-bench.sh    # shorter
#   BOTO3_ONLY=1 host/bench/s3-fetch-bench.sh           # only the boto3 half (no plinth)
#
# Environment (all optional):
#   ROUNDS=5 SIZE_MB=100
#   BOTO3_ONLY=0                1: measure boto3 alone (no plinth binary needed)
#   SKIP_BUILD=1                use the plinth binary already built
#   PLINTH_BIN=<target>/release/plinth  another plinth binary
#   OUT_DIR=<target>/s3-fetch-bench     where results.jsonl and table.md go
# Needs .venv with boto3 and moto[server] (tests/run makes it), jq, tar and gzip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BENCH=s3-fetch-bench
ROUNDS="${ROUNDS:-5}"
SIZE_MB="${SIZE_MB:-100}"
BOTO3_ONLY="${BOTO3_ONLY:-0}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT_DIR="${OUT_DIR:-$TARGET_DIR/s3-fetch-bench}"
PLINTH_BIN="${PLINTH_BIN:-$TARGET_DIR/release/plinth}"
PYTHON="$ROOT/.venv/bin/python"
S3_SETUP="$ROOT/tests/python/s3_setup.py"
BUCKET=bench

for tool in jq tar gzip cmp; do
    command -v "$tool" >/dev/null || { echo "$BENCH: needs $tool on PATH" >&2; exit 1; }
done
"$PYTHON" -c 'import boto3, moto.server' 2>/dev/null ||
    { echo "$BENCH: needs $PYTHON with boto3 and moto[server] (run tests/run)" >&2; exit 1; }
if [[ "$BOTO3_ONLY" != 1 ]]; then
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        echo "== building (release)" >&2
        cargo build --release -p plinth-server >&2
    fi
    [[ -x "$PLINTH_BIN" ]] || { echo "$BENCH: $PLINTH_BIN is missing (build it, or drop SKIP_BUILD)" >&2; exit 1; }
fi
# Peak RSS: GNU time's %M where it exists, else VmHWM polled from /proc.
GNU_TIME=""
if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
    GNU_TIME=/usr/bin/time
fi

# shellcheck source=lib.sh
source "$ROOT/host/bench/lib.sh"

# Clients (boto3 and plinth) reach the server with these, and nothing of the caller's.
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL AWS_DEFAULT_REGION
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

start_server moto 30 "$PYTHON" "$S3_SETUP" serve --no-auth --forever
ENDPOINT="http://$ADDR"
export AWS_ENDPOINT_URL_S3="$ENDPOINT"
echo "== moto at $ENDPOINT" >&2

echo "== making model.tar.gz ($SIZE_MB MiB of random weights)" >&2
mkdir -p "$WORK/model" "$WORK/tiny"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$WORK/model/weights.bin"
cp examples/iris/model/model.onnx "$WORK/model/"
tar czf "$WORK/model.tar.gz" -C "$WORK/model" weights.bin model.onnx
printf x >"$WORK/tiny/weights.bin"
tar czf "$WORK/tiny.tar.gz" -C "$WORK/tiny" weights.bin
ARCHIVE_BYTES="$(stat -c %s "$WORK/model.tar.gz")"
"$PYTHON" "$S3_SETUP" create-bucket "$ENDPOINT" "$BUCKET"
"$PYTHON" "$S3_SETUP" put-file "$ENDPOINT" "$BUCKET" model.tar.gz "$WORK/model.tar.gz"
"$PYTHON" "$S3_SETUP" put-file "$ENDPOINT" "$BUCKET" tiny.tar.gz "$WORK/tiny.tar.gz"

now() { date +%s.%N; }

# Checks that DIR holds the original weights.bin; exits with a listing otherwise.
check_unpacked() {
    local what="$1" dir="$2" original="$3"
    if ! cmp -s "$dir/weights.bin" "$original"; then
        echo "$BENCH: $what: $dir/weights.bin is missing or differs from the original; $dir holds:" >&2
        ls -laR "$dir" >&2
        exit 1
    fi
}

# boto3: download_file, then tar xzf; prints a JSON result line.
run_boto3() {
    local round="$1" dest="$WORK/boto3-$1"
    mkdir -p "$dest"
    local start end
    start="$(now)"
    "$PYTHON" "$S3_SETUP" get-file "$ENDPOINT" "$BUCKET" model.tar.gz "$WORK/download.tar.gz"
    tar xzf "$WORK/download.tar.gz" -C "$dest"
    end="$(now)"
    check_unpacked boto3 "$dest" "$WORK/model/weights.bin"
    rm -rf "$dest" "$WORK/download.tar.gz"
    jq -nc --argjson round "$round" --argjson s "$(awk "BEGIN { print $end - $start }")" \
        '{round: $round, tool: "boto3", seconds: $s}'
}

# `plinth fetch KEY --dest DEST`: sets FETCH_SECONDS (wall), FETCH_RSS_KIB (peak) and
# FETCH_JSON (what it printed); exits with its stderr if it fails.
plinth_fetch() {
    local key="$1" dest="$2" start end status=0
    mkdir -p "$dest"
    start="$(now)"
    if [[ -n "$GNU_TIME" ]]; then
        "$GNU_TIME" -f %M -o "$WORK/rss" "$PLINTH_BIN" fetch "s3://$BUCKET/$key" --dest "$dest" \
            >"$WORK/fetch.out" 2>"$WORK/fetch.err" || status=$?
        end="$(now)"
        FETCH_RSS_KIB="$(tail -n 1 "$WORK/rss")"
    else
        "$PLINTH_BIN" fetch "s3://$BUCKET/$key" --dest "$dest" >"$WORK/fetch.out" 2>"$WORK/fetch.err" &
        local pid=$! hwm=0 line
        while kill -0 "$pid" 2>/dev/null; do
            line="$(grep '^VmHWM:' "/proc/$pid/status" 2>/dev/null || true)"
            [[ -n "$line" ]] && hwm="$(awk '{print $2}' <<<"$line")"
            sleep 0.01
        done
        wait "$pid" || status=$?
        end="$(now)"
        FETCH_RSS_KIB="$hwm"
    fi
    if ((status != 0)); then
        echo "$BENCH: plinth fetch s3://$BUCKET/$key failed ($status):" >&2
        cat "$WORK/fetch.err" >&2
        exit 1
    fi
    FETCH_SECONDS="$(awk "BEGIN { print $end - $start }")"
    FETCH_JSON="$(jq -c . "$WORK/fetch.out" 2>/dev/null || echo null)"
}

# plinth: the model, then the tiny archive for the baseline RSS; prints a JSON result line.
run_plinth() {
    local round="$1" dest="$WORK/plinth-$1"
    plinth_fetch model.tar.gz "$dest"
    # It unpacks into DEST/s3/<sha256>/, the layout of a data directory's artifacts.
    check_unpacked plinth "$(jq -r .Directory <<<"$FETCH_JSON")" "$WORK/model/weights.bin"
    rm -rf "$dest"
    local seconds="$FETCH_SECONDS" rss="$FETCH_RSS_KIB" reported="$FETCH_JSON"
    plinth_fetch tiny.tar.gz "$dest"
    check_unpacked "plinth (tiny)" "$(jq -r .Directory <<<"$FETCH_JSON")" "$WORK/tiny/weights.bin"
    rm -rf "$dest"
    jq -nc --argjson round "$round" --argjson s "$seconds" --argjson rss "$rss" \
        --argjson base "$FETCH_RSS_KIB" --argjson reported "$reported" \
        '{round: $round, tool: "plinth", seconds: $s, peak_rss_kib: $rss,
          baseline_rss_kib: $base, reported: $reported}'
}

mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: >"$RESULTS"
TOOLS=(boto3 plinth)
[[ "$BOTO3_ONLY" == 1 ]] && TOOLS=(boto3)
for round in $(seq 1 "$ROUNDS"); do
    order=("${TOOLS[@]}")
    if ((round % 2 == 0)) && ((${#TOOLS[@]} == 2)); then
        order=(plinth boto3)
    fi
    for tool in "${order[@]}"; do
        echo "== round $round: $tool" >&2
        "run_$tool" "$round" | tee -a "$RESULTS" >&2
    done
done

TABLE="$OUT_DIR/table.md"
jq -rs "$JQ_MEDIAN"'
    def r(n): . * n | round / n;
    def mib: . / 1024 | r(10);
    (map(select(.tool == "boto3")) | map(.seconds) | median) as $boto3
    | (map(select(.tool == "plinth"))) as $plinth
    | ($plinth | map(.seconds) | median) as $secs
    | ($plinth | map(.peak_rss_kib) | median) as $peak
    | ($plinth | map(.baseline_rss_kib) | median) as $base
    | (group_by(.round)
        | map(select(length == 2) | (map(select(.tool == "plinth"))[0].seconds)
              / (map(select(.tool == "boto3"))[0].seconds))
        | median) as $ratio
    | "| boto3 s | plinth s | plinth/boto3 | plinth peak RSS MiB | baseline RSS MiB | difference MiB |",
      "|---:|---:|---:|---:|---:|---:|",
      "| \($boto3 | r(1000)) | \($secs // "-" | if type == "number" then r(1000) else . end) | "
      + "\($ratio // "-" | if type == "number" then r(100) else . end) | "
      + "\($peak // "-" | if type == "number" then mib else . end) | "
      + "\($base // "-" | if type == "number" then mib else . end) | "
      + "\(if $peak and $base then ($peak - $base) | mib else "-" end) |"
' "$RESULTS" >"$TABLE"
echo
echo "$ROUNDS rounds (medians; the ratio is the median of the per-round ratios), model.tar.gz $((ARCHIVE_BYTES >> 20)) MiB ($SIZE_MB MiB of random weights), moto at $ENDPOINT; plinth: $([[ "$BOTO3_ONLY" == 1 ]] && echo "not run (BOTO3_ONLY=1)" || echo "$PLINTH_BIN"); peak RSS from ${GNU_TIME:-/proc VmHWM polling}; $(nproc) CPUs."
echo
cat "$TABLE"
echo "Results: $RESULTS, $TABLE"
