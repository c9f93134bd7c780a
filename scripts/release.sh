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
  # RUSTFLAGS splits on spaces: keep the linker's defaults rather than break the build.
  *" "*) ;;
  # No unwind tables and no lookup table for them (see scripts/discard-unwind-tables.ld);
  # the code that start-up and idling run placed first, together (see scripts/hot-text.ld).
  *) base_flags="$base_flags -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$PWD/scripts/discard-unwind-tables.ld"
     base_flags="$base_flags -C link-arg=-Wl,-T,$PWD/scripts/hot-text.ld" ;;
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
# Cargo does not track the linker scripts: remove the binaries linked before a script last
# changed, so that cargo links them again.
relink_if_stale() {
  local bin script
  for bin in "$1"/aegis_agent-* "$1"/aegis_gateway-* "$1"/aegis_kit-*; do
    case "$bin" in *.*) continue ;; esac
    [ -f "$bin" ] || continue
    for script in scripts/*.ld; do
      if [ "$script" -nt "$bin" ]; then rm -f "$bin"; break; fi
    done
  done
}
# Source paths as panic locations name them: a crate's own (ureq-3.1.2/src/...) rather than
# this machine's registry folder, and std's as shipped (/rustc/COMMIT/...) whether or not
# rust-src is installed (with it, rustc embeds its local path: 8 KB more and the builder's
# home folder in the binary). Paths with spaces are left alone (RUSTFLAGS splits on them).
path_remaps() {
  local sysroot commit reg
  sysroot=$(rustc "${toolchain[@]}" --print sysroot)
  commit=$(rustc "${toolchain[@]}" -vV | sed -n 's/^commit-hash: //p')
  case "$sysroot" in *" "*) ;; *) printf ' --remap-path-prefix=%s' "$sysroot/lib/rustlib/src/rust=/rustc/$commit" ;; esac
  # The registry's folders exist once the sources are unpacked, so that the first build
  # gets the same flags as the next.
  cargo "${toolchain[@]}" fetch --locked --target "$target" >/dev/null 2>&1 || true
  for reg in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
    case "$reg" in *" "*) ;; *) [ -d "$reg" ] && printf ' --remap-path-prefix=%s' "$reg=" ;; esac
  done
}
# One package at a time: features are then chosen per binary (only aegis-kit carries the
# bundled time zone database, the agent no scheduler at all).
build_all() { # build_all DEFAULT_TARGET_DIR [cargo build args...]
  relink_if_stale "${CARGO_TARGET_DIR:-$1}/$target/release/deps"
  shift
  local flags
  flags="${RUSTFLAGS:-}$(path_remaps)"
  for p in aegis-agent aegis-gateway aegis-kit; do
    RUSTFLAGS="$flags" cargo "${toolchain[@]}" build --release --locked --target "$target" \
      -p "$p" --bins "${extra[@]}" "$@" >&2 || return 1
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
  extra=(-Z build-std=std,panic_abort --target-dir "${CARGO_TARGET_DIR:-target/tiny}")
  build_all target/tiny "$@"
  echo "${CARGO_TARGET_DIR:-target/tiny}/$target/release"
  exit 0
fi
if ! build_all target "$@"; then
  [ "$target" = "$musl" ] || exit 1
  echo "release: the musl build failed (see above); building glibc static binaries instead" >&2
  glibc_static
  build_all target "$@"
fi
echo "${CARGO_TARGET_DIR:-target}/$target/release"
