#!/usr/bin/env bash
# Set everything up, serve the iris classifier, show a prediction, and keep serving.
# Usage: examples/iris/demo.sh   (from anywhere; Ctrl-C stops the server)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
echo "==> building the plugins (wasm32-wasip2) and the plinth binary (release)"
cargo build --quiet --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
cargo build --quiet --release -p plinth-server
plinth="$root/target/release/plinth"

port="${PLINTH_DEMO_PORT:-8080}"
out="$(mktemp)"
"$plinth" serve --config examples/iris/plinth.toml --bind "127.0.0.1:$port" --data-dir "$root/.plinth" >"$out" &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$out" && break
  kill -0 $server 2>/dev/null || { echo "plinth serve exited; see the messages above" >&2; exit 1; }
  sleep 0.1
done
url="$(sed -n 's/^listening on //p' "$out")"

echo
echo "==> the iris endpoint is serving at $url"
echo "==> plinth invoke --endpoint iris --content-type text/csv --body '5.1,3.5,1.4,0.2'"
"$plinth" invoke --endpoint-url "$url" --endpoint iris --content-type text/csv --body '5.1,3.5,1.4,0.2'
echo
echo "==> the same with curl, two rows, answer as CSV:"
echo "    curl -s -X POST $url/endpoints/iris/invocations -H 'Content-Type: text/csv' -H 'Accept: text/csv' --data-binary \$'6.7,3.0,5.2,2.3\\n5.9,3.0,4.2,1.5'"
curl -s -X POST "$url/endpoints/iris/invocations" -H 'Content-Type: text/csv' -H 'Accept: text/csv' \
  --data-binary $'6.7,3.0,5.2,2.3\n5.9,3.0,4.2,1.5'
echo
echo "==> still serving at $url; press Ctrl-C to stop"
wait $server
