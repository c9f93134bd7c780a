#!/usr/bin/env bash
# Property-based fuzzing of every parser at scale, each for a fixed time.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
# Each target runs with a huge PROPTEST_CASES under `timeout`: reaching the time limit
# without a failure counts as a pass. CI runs the same properties with the default 256
# cases as part of the test suite. A failure prints the minimal failing input and is
# saved in the crate's proptest-regressions/ folder, so it becomes a permanent test.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
targets=(
  "tether:--test parsers_prop frame_"          # frame parser and round trip
  "tether:--test parsers_prop rpc_"            # JSON-RPC line decoder
  "tether:--test parsers_prop line_reader"     # newline reader with size limit
  "tether:--test parsers_prop ndjson_"         # NDJSON egress stream reader
  "tether:--test parsers_prop addr_"           # tether addresses, hybrid vsock CONNECT
  "tether:--test parsers_prop loopback_"       # the loopback check on URLs (proxy bypass)
  "aegis-agent:--bin aegis-agent sse::"        # SSE parser
  "aegis-agent:--bin aegis-agent llm::tests::any_"  # stream chunks: thoughts, tool calls, usage
  "aegis-agent:--bin aegis-agent session::"    # session-name sanitiser
  "aegis-gateway:--bin aegis-gateway telegram::"  # Telegram update parser
  "aegis-gateway:--bin aegis-gateway markdown::"  # Markdown to Telegram HTML
)
cargo build --release --tests -q -p tether -p aegis-agent -p aegis-gateway
failed=0
for t in "${targets[@]}"; do
  pkg=${t%%:*}; args=${t#*:}
  echo "== $pkg $args (${secs}s)"
  # shellcheck disable=SC2086
  PROPTEST_CASES=100000000 timeout "$secs" cargo test -q --release -p "$pkg" $args -- --test-threads 1
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ]; then failed=1; echo "!! $pkg $args FAILED"; fi
done
exit $failed
