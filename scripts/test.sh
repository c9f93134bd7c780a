#!/usr/bin/env bash
# The project's one test command (README "Run the tests"; .ci/run calls it too):
# formatting, lints, then every unit, property and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# rustfmt and clippy ship with rustup's default profile; add them where a minimal
# toolchain lacks them.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests start the real binaries: build them first so every test finds them.
cargo build --workspace --bins --locked
cargo test --workspace --locked
