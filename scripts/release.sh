#!/usr/bin/env bash
# Build the release binaries as small static executables and print where they are.
#   musl (fully static) when the Rust musl target and musl-gcc are installed,
#   else glibc with crt-static.
# Usage: scripts/release.sh [cargo build args...]   (prints the output folder last)
#        TINY=1 scripts/release.sh ...               (nightly build-std, smallest binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(uname -m)
musl="$arch-unknown-linux-musl"
if rustup target list --installed 2>/dev/null | grep -qx "$musl" && command -v musl-gcc >/dev/null; then
  target=$musl
  export "CC_${arch}_unknown_linux_musl=musl-gcc"
else
  target=$(rustc -vV | sed -n 's/host: //p')
  # With an explicit --target these flags reach only the binaries, not build scripts.
  export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi
if [ "${TINY:-}" = 1 ]; then
  # Smallest build: std rebuilt with panic=immediate-abort (no unwinding or panic
  # message machinery). Needs a nightly toolchain with the rust-src component.
  export RUSTFLAGS="${RUSTFLAGS:-} -Zunstable-options -Cpanic=immediate-abort"
  cargo +nightly build --release --locked --target "$target" -Z build-std=std,panic_abort \
    --target-dir target/tiny --bins "$@" >&2
  echo "target/tiny/$target/release"
  exit 0
fi
cargo build --release --locked --target "$target" --bins "$@" >&2
echo "target/$target/release"
