#!/usr/bin/env bash
# Build the release binaries as small static executables and print where they are.
#   musl (fully static, smallest) when the toolchain has the Rust musl target: it is added
#   with rustup when missing, and linked self-contained (the C parts of dependencies are
#   compiled with musl-gcc when installed, else with the plain C compiler);
#   else glibc with crt-static, with a line saying so and how to get musl.
# Usage: scripts/release.sh [cargo build args...]   (prints the output folder last)
#        TINY=1 scripts/release.sh ...               (smallest: std rebuilt, see below)
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$(uname -m)
musl="$arch-unknown-linux-musl"
# Whether `rustup ARGS...` lists LINE (read whole first: `grep -q` closing the pipe early
# would fail the pipeline under pipefail).
rustup_lists() {
  local line=$1 out
  shift
  out=$(rustup "$@" 2>/dev/null) || return 1
  grep -qx -- "$line" <<<"$out"
}
has_musl() { rustup_lists "$musl" target list --installed; }
if ! has_musl && command -v rustup >/dev/null; then
  echo "release: adding the Rust target $musl (rustup target add $musl)" >&2
  timeout 30 rustup target add "$musl" >/dev/null 2>&1 || true
fi
glibc_static() {
  target=$(rustc -vV | sed -n 's/host: //p')
  # With an explicit --target these flags reach only the binaries, not build scripts.
  export RUSTFLAGS="${base_flags} -C target-feature=+crt-static"
}
base_flags="${RUSTFLAGS:-}"
case "$PWD" in
  *" "*) ;; # RUSTFLAGS splits on spaces: keep the tables rather than break the build.
  # No unwind tables and no lookup table for them (see scripts/discard-unwind-tables.ld).
  *) base_flags="$base_flags -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$PWD/scripts/discard-unwind-tables.ld" ;;
esac
if has_musl; then
  target=$musl
  if command -v musl-gcc >/dev/null; then
    export "CC_${arch}_unknown_linux_musl=musl-gcc"
  else
    # The C in our dependencies (ring's crypto) is freestanding: the host compiler does.
    export "CC_${arch}_unknown_linux_musl=${CC:-cc}"
  fi
  # Rust's musl target carries its own C runtime and libc: no musl linker needed.
  export "CARGO_TARGET_$(echo "$musl" | tr a-z- A-Z_)_LINKER=${MUSL_LINKER:-cc}"
  export RUSTFLAGS="${base_flags} -C link-self-contained=yes"
else
  echo "release: the Rust musl target is not available (rustup could not add $musl); building" \
    "glibc static binaries instead, about 1 MB larger each. On a machine that can reach" \
    "static.rust-lang.org: rustup target add $musl" >&2
  glibc_static
fi
# One package at a time: features are then chosen per binary (only aegis-kit carries the
# bundled time zone database, the agent no scheduler at all).
build_all() {
  for p in aegis-agent aegis-gateway aegis-kit; do
    cargo "${toolchain[@]}" build --release --locked --target "$target" -p "$p" --bins \
      "${extra[@]}" "$@" >&2 || return 1
  done
}
toolchain=()
extra=()
if [ "${TINY:-}" = 1 ]; then
  # Smallest build: std rebuilt with panic=immediate-abort (no unwinding or panic
  # message machinery). Unstable options: nightly when installed, else the stable
  # compiler with RUSTC_BOOTSTRAP=1 (works, but the Rust project does not support it).
  if rustup run nightly rustc -V >/dev/null 2>&1 &&
    { [ "$target" != "$musl" ] || rustup_lists "$musl" +nightly target list --installed; }; then
    toolchain=(+nightly)
  else
    echo "release: TINY=1 without a nightly toolchain for $target: using the stable" \
      "compiler's unstable options (RUSTC_BOOTSTRAP=1)" >&2
    export RUSTC_BOOTSTRAP=1
  fi
  if ! rustup_lists rust-src "${toolchain[@]}" component list --installed; then
    echo "release: adding the rust-src component (rustup component add rust-src)" >&2
    timeout 60 rustup "${toolchain[@]}" component add rust-src >/dev/null 2>&1 || true
  fi
  export RUSTFLAGS="${RUSTFLAGS:-} -Zunstable-options -Cpanic=immediate-abort"
  extra=(-Z build-std=std,panic_abort --target-dir target/tiny)
  build_all "$@"
  echo "target/tiny/$target/release"
  exit 0
fi
if ! build_all "$@"; then
  [ "$target" = "$musl" ] || exit 1
  echo "release: the musl build failed (see above); building glibc static binaries instead" >&2
  glibc_static
  build_all "$@"
fi
echo "target/$target/release"
