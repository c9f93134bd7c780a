#!/usr/bin/env bash
# Print the footprint table: each release binary's size against its budget, and the idle
# RSS of the agent and the gateway. Builds through scripts/release.sh (musl when the
# toolchain has it, else glibc static). Informational: it never fails on a budget.
# Usage: scripts/size.sh
#        scripts/size.sh --gateway-idle BINARIES WORK [localhost]   (one row's RSS; see below)
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# RSS, and the anonymous part of it: the rest is the binary's own pages (page cache mapped by
# fault-around), so it follows the file size.
rss_mib() { awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} END {printf "%.2f MiB, anon %d KiB", r/1024, a}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 500); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.01; done; return 1; }

# The gateway, idle: long-polling a stand-in Bot API that never has an update, over HTTPS with
# an RSA chain as the real one (from the test RSA CA, which SSL_CERT_FILE names). As deployed,
# at its default https://api.telegram.org through the resolver and port 443, when run inside
# scripts/deployed_net.py; with "localhost", at https://localhost:PORT.
if [ "${1:-}" = --gateway-idle ]; then
  dir=$2 work=$3 tls=tests/fixtures/tls
  if [ "${4:-}" = localhost ]; then
    addr=127.0.0.1 port=$(free_port) where="over HTTPS to localhost"
    api_url=", \"api_url\": \"https://localhost:$port\""
  else
    addr=127.0.0.2 port=443 api_url="" where="over HTTPS via DNS, as deployed"
  fi
  python3 scripts/stand-in-bot-api.py "$addr:$port" "$tls/localhost-rsa.pem" "$tls/localhost-rsa.key" \
    >/dev/null 2>&1 &
  api=$!
  trap 'kill $api ${gateway:-} 2>/dev/null || true; wait 2>/dev/null || true' EXIT
  wait_port "$addr" "$port"
  echo "{\"telegram\": {\"bot_token\": \"1:size\", \"instance\": \"none\", \"allowed_chats\": [\"*\"]$api_url}}" \
    >"$work/gateway.json"
  env -i PATH="$PATH" HOME="$work" RUST_LOG=error SSL_CERT_FILE="$tls/rsa-ca.pem" \
    "$dir/aegis-gateway" --config "$work/gateway.json" --socket "$work/none.sock" >/dev/null 2>&1 &
  gateway=$!
  sleep 1
  echo "$(rss_mib "$gateway"), $where"
  exit 0
fi

work=$(mktemp -d -t aegis-size-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
dir=$(scripts/release.sh 2>"$work/build.log") || { cat "$work/build.log" >&2; exit 1; }
grep '^release:' "$work/build.log" >&2 || true
case "$dir" in *musl*) libc=musl ;; *) libc="glibc static" ;; esac
# A binary just linked has every page in the page cache, and the kernel then maps more of
# it around each fault (idle RSS one 64 KiB window higher in some runs); a booted VM reads
# it from disk. Written back and dropped first, so every run starts as cold as a VM.
sync
python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' \
  "$dir/aegis-agent" "$dir/aegis-gateway" "$dir/aegis-kit" 2>/dev/null || true

# The agent, idle in harness mode, with a provider as deployed (nothing is sent at idle).
port=$(free_port)
mkdir -p "$work/ws"
env -i PATH="$PATH" AEGIS_AGENT_ADDR="127.0.0.1:$port" AEGIS_WORKSPACE="$work/ws" RUST_LOG=error \
  OPENAI_API_KEY=sk-size-measurement \
  "$dir/aegis-agent" >/dev/null 2>&1 &
pids+=($!); agent=$!
wait_port 127.0.0.1 "$port"
sleep 0.3
agent_rss=$(rss_mib "$agent")

# Where private namespaces cannot be made (deployed_net.py exits 3), localhost stands in.
if ! gateway_rss=$(python3 scripts/deployed_net.py bash scripts/size.sh --gateway-idle "$dir" "$work" 2>"$work/net.log"); then
  sed -n 's/^deployed_net: //p' "$work/net.log" >&2
  gateway_rss=$(bash scripts/size.sh --gateway-idle "$dir" "$work" localhost)
fi

printf '%-15s %12s %12s  %s\n' binary bytes budget "idle RSS"
row() { printf '%-15s %12s %12s  %s\n' "$1" "$(stat -c %s "$dir/$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" "$2" "$3"; }
row aegis-agent 1,500,000 "$agent_rss (budget 1.3 MiB)"
row aegis-gateway 1,500,000 "$gateway_rss (budget 2 MiB)"
row aegis-kit "-" "-"
echo "($libc, $(rustc -V | cut -d' ' -f2), $dir)"
