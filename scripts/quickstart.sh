#!/usr/bin/env bash
# The README's main command: build the kit, start `aegis-kit serve` if nothing serves
# ~/.aegis/aegisd.sock, create the instance `my-agent` if absent (passing on
# OPENAI_API_KEY / ANTHROPIC_API_KEY / OPENAI_BASE_URL / AEGIS_MODEL from the environment),
# and open a terminal chat with it. `aegis-kit down` (target/release/aegis-kit down) stops serve.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -q
exec target/release/aegis-kit quickstart "$@"
