# Shared by Plinth's benchmark scripts (sourced): CPU pinning, a work directory cleaned up
# on exit with every server started, `start_server`, and JQ_MEDIAN
# (median and median_ci).
#
# Reads PIN, SERVER_CPUS, LOADGEN_CPUS; sets SERVER_PIN, LOADGEN_PIN (arrays), WORK, PIDS.
# The sourcing script names itself in BENCH (for messages).

# A jq definition to prepend to a program: `median` of an array of numbers (null if empty).
# shellcheck disable=SC2034  # used by the sourcing scripts
JQ_MEDIAN='def median: sort | if length == 0 then null elif length % 2 == 1
    then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
# A distribution-free 95% confidence interval for the median: [x(k), x(n+1-k)] of the
# sorted values, k the largest with P(B <= k - 1) <= 0.025 for B ~ Binomial(n, 1/2), so
# that it covers the median with probability 1 - 2 P(B <= k - 1) >= 0.95; null below 6
# values, where no such k exists. It treats the values as independent draws: on a machine
# whose load drifts over minutes it is narrower than it should be, so compare runs made at
# different times as well.
def median_ci: sort | length as $n
    | (reduce range(0; $n) as $i ({p: pow(0.5; $n), cdf: 0, k: 0};
        .cdf += .p | .p *= ($n - $i) / ($i + 1)
        | if .cdf <= 0.025 then .k = $i + 1 else . end) | .k) as $k
    | if $k < 1 then null else [.[$k - 1], .[$n - $k]] end;'

SERVER_PIN=()
LOADGEN_PIN=()
if [[ "${PIN:-1}" != 0 ]] && command -v taskset >/dev/null && (($(nproc) >= 2)); then
    SERVER_PIN=(taskset -c "${SERVER_CPUS:-0}")
    LOADGEN_PIN=(taskset -c "${LOADGEN_CPUS:-1}")
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Start a server in the background; once it says `listening on http://ADDR`, set ADDR.
# (Not in a subshell: its pid must reach PIDS for the cleanup.)
start_server() {
    local name="$1" timeout="$2"
    shift 2
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    local waited=0
    while ! grep -q '^listening on http://' "$WORK/$name.out" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$BENCH: $name exited before listening:" >&2
            cat "$WORK/$name.err" >&2
            exit 1
        fi
        if ((waited >= timeout * 10)); then
            echo "$BENCH: $name did not listen within ${timeout}s" >&2
            cat "$WORK/$name.err" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    ADDR="$(sed -n 's|^listening on http://||p' "$WORK/$name.out" | head -n1)"
}
