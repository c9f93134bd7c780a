#!/usr/bin/env python3
"""Regenerate scripts/hot-text.ld: the code aegis-agent and aegis-gateway run from exec until
they idle, in the order it first runs, for the linker to place first and together.

Why: scattered through .text, that code (about 150 KB) sits on most of the binary's pages,
and the kernel maps 64 KiB around every page fault, so an idle agent had 1.3 MiB of code
resident and a cold start read nearly the whole file. Together it fits in a few pages.

How: builds the release binaries with a link map each through scripts/release.sh (in
target/hot-text, also with TINY=1), runs each under valgrind's lackey (which prints every
instruction's address) until it idles, and maps those addresses to the input sections of
the link map.
Hashes in the section names become wildcards, so the list keeps working across rebuilds and
small changes; code it misses stays in .text and only faults in later. Rerun it when the
start-up path changes (scripts/size.sh's idle RSS shows when): needs valgrind.
Usage: scripts/hot-text.py
"""
import bisect
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "hot-text.ld"
# The builds release.sh makes. TINY=1 rebuilds std, whose symbols are then mangled the legacy
# way instead of v0: its start-up code needs patterns of its own.
VARIANTS = [("default", {}), ("tiny", {"TINY": "1"})]
# Idle: the trace has not grown for this long. Then keep tracing a while for periodic work.
QUIET_S = 2.0
AFTER_IDLE_S = 6.0
GIVE_UP_S = 180.0


def build(variant, extra_env):
    """The release binaries, each with a link map, in target/hot-text/VARIANT (the same
    profile: symbol names, and so section names, depend on it). Returns (folder, maps)."""
    maps = ROOT / "target" / "hot-text" / variant / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    flags = os.environ.get("RUSTFLAGS", "") + f" -C link-arg=-Wl,-Map={maps}"
    env = dict(os.environ, CARGO_TARGET_DIR=str(maps.parent), RUSTFLAGS=flags.strip(),
               **extra_env)
    out = subprocess.run(["bash", "scripts/release.sh"], cwd=ROOT, env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return ROOT / out.strip().splitlines()[-1], maps


def link_map(crate, folder):
    """Input code sections of the newest map for `crate`: sorted [(address, size, name, file)]."""
    maps = sorted(folder.glob(f"{crate}-*.map"), key=lambda p: p.stat().st_mtime)
    if not maps:
        sys.exit(f"hot-text: no link map for {crate} in {folder}")
    head = re.compile(r"^ (\.text\S*)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*))?$")
    tail = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$")
    sections, pending, started = [], None, False
    for line in maps[-1].read_text(errors="replace").splitlines():
        # Before this line the map lists the discarded sections, all at address 0.
        if line.startswith("Linker script and memory map"):
            started = True
            continue
        if not started:
            continue
        m = head.match(line)
        if m:
            pending = None
            if m[2]:
                sections.append((int(m[2], 16), int(m[3], 16), m[1], m[4]))
            else:
                pending = m[1]  # a long name: address, size and file on the next line
            continue
        m = tail.match(line) if pending else None
        if m:
            sections.append((int(m[1], 16), int(m[2], 16), pending, m[3]))
        pending = None
    return sorted(s for s in sections if s[1] > 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"hot-text: nothing listened on {port}")


def load_base(pid, binary):
    """Where valgrind mapped `binary` in process `pid` (it is position independent)."""
    real = os.path.realpath(binary)
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        f = line.split()
        if len(f) >= 6 and f[5] == real and int(f[2], 16) == 0:
            return int(f[0].split("-")[0], 16)
    sys.exit(f"hot-text: {binary} is not mapped in process {pid}")


def trace(binary, args, env, log, port=None):
    """Run `binary` under lackey until it idles; instruction offsets in first-run order."""
    cmd = ["valgrind", "--tool=lackey", "--trace-mem=yes", f"--log-file={log}", str(binary)]
    proc = subprocess.Popen(cmd + args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + GIVE_UP_S
        if port:
            wait_port(port, deadline)
        size, still = -1, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = log.stat().st_size if log.exists() else 0
            if now != size:
                size, still = now, time.monotonic()
            elif time.monotonic() - still >= QUIET_S:
                break
        time.sleep(AFTER_IDLE_S)
        base = load_base(proc.pid, binary)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    seen, order = set(), []
    with open(log) as f:
        for line in f:
            if line.startswith("I  "):
                off = int(line[3:line.index(",")], 16) - base
                if off not in seen:
                    seen.add(off)
                    order.append(off)
    return order


def hot_sections(sections, offsets):
    """The sections the offsets fall in, each once, in the order first run."""
    starts = [s[0] for s in sections]
    seen, hot = set(), []
    for off in offsets:
        i = bisect.bisect_right(starts, off) - 1
        if i >= 0 and off < starts[i] + sections[i][1] and i not in seen:
            seen.add(i)
            hot.append(sections[i])
    return hot


def pattern(name, file):
    """A linker-script input-section pattern for the section, or None when it cannot name it."""
    if name == ".text":
        # Assembly (memcpy and the like, the C runtime's _start) has a plain .text: name the
        # file, or the member of a C library archive.
        m = re.match(r"(?:.*/)?(lib[^/]*\.a)\(([^()/]*)\)$", file)
        if m:
            return f"*{m[1]}:{m[2]}(.text)"
        m = re.match(r"(?:.*/)?([^/()]+\.o)$", file)
        return f"*{m[1]}(.text)" if m else None
    if not re.fullmatch(r"[A-Za-z0-9_.$]+", name):
        return None
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)  # legacy symbol hash
    name = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)  # v0 crate disambiguator
    name = re.sub(r"\.[0-9]+$", ".*", name)  # a local copy's number (LTO renames them)
    return f"*({name})"


def main():
    builds = [(variant, *build(variant, extra_env)) for variant, extra_env in VARIANTS]
    work = Path(tempfile.mkdtemp(prefix="aegis-hot-text-"))
    api = None
    try:
        (work / "ws").mkdir()
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "error", "HOME": str(work)}
        api_port = free_port()
        api = subprocess.Popen([sys.executable, str(ROOT / "scripts/stand-in-bot-api.py"),
                                str(api_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(api_port, time.monotonic() + 10)
        (work / "gateway.json").write_text(
            '{"telegram": {"bot_token": "1:hot", "instance": "none", "allowed_chats": ["*"],'
            f' "api_url": "http://127.0.0.1:{api_port}"}}}}')
        gateway_args = ["--config", str(work / "gateway.json"), "--socket", str(work / "none.sock")]
        # One binary's code together in every variant: each binary's patterns in turn.
        patterns = []
        for crate, name in [("aegis_agent", "aegis-agent"), ("aegis_gateway", "aegis-gateway")]:
            for variant, folder, maps in builds:
                port = free_port() if crate == "aegis_agent" else None
                # With a provider, as deployed (its client is built at start; nothing is sent).
                run_env = env if port is None else dict(
                    env, AEGIS_AGENT_ADDR=f"127.0.0.1:{port}", AEGIS_WORKSPACE=str(work / "ws"),
                    OPENAI_API_KEY="sk-hot-text")
                args = gateway_args if port is None else []
                log = work / f"{crate}-{variant}.log"
                offsets = trace(folder / name, args, run_env, log, port)
                hot = hot_sections(link_map(crate, maps), offsets)
                print(f"hot-text: {name} ({variant}): {len(hot)} sections,"
                      f" {sum(s[1] for s in hot)} bytes run until idle", file=sys.stderr)
                for s in hot:
                    p = pattern(s[2], s[3])
                    if p and p not in patterns:
                        patterns.append(p)
        write(patterns)
        print(f"hot-text: wrote {OUT.relative_to(ROOT)} ({len(patterns)} patterns)", file=sys.stderr)
    finally:
        if api:
            api.kill()
            api.wait()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def write(patterns):
    rustc = subprocess.run(["rustc", "-V"], stdout=subprocess.PIPE, text=True).stdout.strip()
    lines = [
        "/* Generated by scripts/hot-text.py (" + rustc + "); regenerate rather than edit.",
        "   The code aegis-agent and aegis-gateway run from exec until idle, in the order it",
        "   first runs, placed before the rest of .text (scripts/release.sh adds this to the",
        "   default linker script): an idle process then maps, and a cold start reads, a few",
        "   pages of code instead of most of the binary. Sections no pattern names stay where",
        "   they were; a pattern that names nothing is ignored. */",
        "SECTIONS",
        "{",
        "  .text.aegis_hot :",
        "  {",
    ]
    lines += [f"    {p}" for p in patterns]
    lines += ["  }", "}", "INSERT BEFORE .text;", ""]
    OUT.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
