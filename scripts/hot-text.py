#!/usr/bin/env python3
"""Regenerate scripts/hot-text.ld: the code aegis-agent and aegis-gateway run from exec until
they idle, then the code of the agent's first message, in the order it first runs, for the
linker to place first and together.

Why: scattered through .text, that code (about 150 KB) sits on most of the binary's pages,
and the kernel maps 64 KiB around every page fault, so an idle agent had 1.3 MiB of code
resident and a cold start read nearly the whole file. Together it fits in a few pages.

How: builds the release binaries with a link map each through scripts/release.sh (in
target/hot-text, also with TINY=1), runs each under valgrind's lackey (which prints every
instruction's address) until it idles (the agent idles with the default OpenAI URL, as
deployed, then answers one message from a stand-in model, once over HTTPS and once over
plain HTTP, in runs of their own), and maps those addresses to the input
sections of the link map. The Bot API and the hosted model speak HTTPS, as in production
(the Bot API with an RSA chain, as Telegram's; the model with ECDSA), with the test CAs of
tests/fixtures/tls named by SSL_CERT_FILE, and are reached by their real names through the
resolver on port 443 (scripts/deployed_net.py's namespaces; where those cannot be made, at
localhost, without the resolver's code); the harness is plain HTTP on loopback, as it is
in a VM.
Hashes in the section names become wildcards, so the list keeps working across rebuilds and
small changes; code it misses stays in .text and only faults in later. Rerun it when the
start-up path changes (scripts/size.sh's idle RSS shows when): needs valgrind.
Usage: scripts/hot-text.py
"""
import bisect
import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ left in scripts/
import deployed_net  # noqa: E402  (scripts/, beside this file)

ROOT = Path(__file__).resolve().parent.parent
TLS = ROOT / "tests" / "fixtures" / "tls"
OUT = ROOT / "scripts" / "hot-text.ld"
# The builds release.sh makes. TINY=1 rebuilds std, whose symbols are then mangled the legacy
# way instead of v0: its start-up code needs patterns of its own.
VARIANTS = [("default", {}), ("tiny", {"TINY": "1"})]
# Code the binaries run at idle on real hardware that lackey never sees, found with gdb
# breakpoints on every section left out of the list (an idle gateway, deployed network, AMD
# EPYC): ring picks its x25519 and AES-GCM code by CPU feature, and valgrind's CPU offers no
# ADX and no VAES, so the trace runs the portable variants (also kept: other CPUs run
# them); and musl's strcmp. Each left a 64 KiB window of code resident at idle (gateway
# 1.74 -> 1.67 MiB with the ring ones). Placed at the end of the idle code.
UNTRACED_IDLE = [
    "*:*-curve25519_64_adx.o(.text*)",
    "*:*-fiat_curve25519_adx_mul.o(.text)",
    "*:*-fiat_curve25519_adx_square.o(.text)",
    "*:*-aes-gcm-avx2-x86_64-elf.o(.text)",
    "*(.text.strcmp)",
]
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


def wait_port(port, deadline, addr="127.0.0.1"):
    while time.monotonic() < deadline:
        try:
            socket.create_connection((addr, port), timeout=1).close()
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


def wait_idle(log, deadline):
    """Until the trace has not grown for QUIET_S: the process runs nothing."""
    size, still = -1, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size, still = now, time.monotonic()
        elif time.monotonic() - still >= QUIET_S:
            return


def trace(binary, args, env, log, port=None, steps=()):
    """Run `binary` under lackey until it idles, then each of `steps` (a function) and until
    it idles again. Returns the instruction offsets each phase ran first, in first-run
    order: [until idle, after step 1, ...]."""
    # No gdb server: its pipes in /tmp would outlive a killed run.
    cmd = ["valgrind", "--tool=lackey", "--trace-mem=yes", "--vgdb=no", f"--log-file={log}",
           str(binary)]
    proc = subprocess.Popen(cmd + args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    marks = []
    try:
        deadline = time.monotonic() + GIVE_UP_S
        if port:
            wait_port(port, deadline)
        wait_idle(log, deadline)
        for step in steps:
            marks.append(log.stat().st_size)
            step()
            wait_idle(log, deadline)
        time.sleep(AFTER_IDLE_S)
        base = load_base(proc.pid, binary)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    data = log.read_bytes()
    # Each phase from the first whole line after its mark.
    bounds = [0] + [data.find(b"\n", m) + 1 for m in marks] + [len(data)]
    seen, phases = set(), []
    for start, end in zip(bounds, bounds[1:]):
        order = []
        for line in data[start:end].splitlines():
            if line.startswith(b"I  "):
                off = int(line[3:line.index(b",")], 16) - base
                if off not in seen:
                    seen.add(off)
                    order.append(off)
        phases.append(order)
    return phases


WORDS = ["Hello", " from", " the", " stand-in."]


class StandIns(http.server.BaseHTTPRequestHandler):
    """What the agent talks to in harness mode: an OpenAI-compatible model that streams a
    short reply, and the harness (egress frames, the keepalive lease, and a `host:`
    model's request, answered with llm.frames to the agent at `agent_port`). `done` is
    set when an assistant.done frame arrives."""
    done = threading.Event()
    agent_port = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/chat/completions"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for word in WORDS:
                chunk = json.dumps({"choices": [{"delta": {"content": word}}]})
                self.wfile.write(f"data: {chunk}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True
            return
        if self.path == "/v1/llm/chat":
            req_id = json.loads(body)["req_id"]
            threading.Thread(target=host_frames, args=(req_id,), daemon=True).start()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            answer = json.dumps({"req_id": req_id}).encode()
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        if self.path == "/v1/tether/send" and b'"assistant.done"' in body:
            StandIns.done.set()
        self.reply()

    def do_DELETE(self):
        self.reply()

    def reply(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def host_frames(req_id):
    """What aegisd and the harness send for a `host:` model: a delta per word, then done."""
    frames = [{"type": "llm.delta", "req_id": req_id,
               "data": json.dumps({"choices": [{"delta": {"content": w}}]})} for w in WORDS]
    frames.append({"type": "llm.done", "req_id": req_id})
    for f in frames:
        req = urllib.request.Request(f"http://127.0.0.1:{StandIns.agent_port}/v1/llm/recv",
                                     data=json.dumps(f).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).read()


def first_message(port):
    """A step: one user.message to the agent on `port`, then its reply's end."""
    def step():
        StandIns.done.clear()
        frame = {"v": 1, "type": "user.message", "ts": "2026-01-01T00:00:00.000Z",
                 "session": {"channel": "telegram", "id": "1"}, "msg_id": "hot-1",
                 "payload": {"text": "Hello", "user": {"id": "1", "name": "Hot"}}}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tether/recv",
                                     data=json.dumps(frame).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).read()
        if not StandIns.done.wait(GIVE_UP_S):
            sys.exit("hot-text: the agent did not finish its reply")
    return step


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
        # Assembly (memcpy and the like, the C runtime's _start, ring's AES-GCM, SHA-2 and
        # Montgomery code) has a plain .text: name the file, or the member of a C library
        # archive or of a crate's rlib (`libring-HASH.rlib(HASH-aesni-gcm-x86_64-elf.o)`,
        # both hashes as wildcards).
        m = re.match(r"(?:.*/)?(lib[^/]*\.a)\(([^()/]*)\)$", file)
        if m:
            return f"*{m[1]}:{m[2]}(.text)"
        m = re.match(r"(?:.*/)?(lib[^/]*?)-[0-9a-f]+\.rlib\((?:[0-9a-f]+-)?([^()/]*\.o)\)$", file)
        if m:
            return f"*{m[1]}-*.rlib:*{m[2]}(.text)"
        m = re.match(r"(?:.*/)?([^/()]+\.o)$", file)
        return f"*{m[1]}(.text)" if m else None
    if not re.fullmatch(r"[A-Za-z0-9_.$]+", name):
        return None
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)  # legacy symbol hash
    name = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)  # v0 crate disambiguator
    name = re.sub(r"\.[0-9]+$", ".*", name)  # a local copy's number (LTO renames them)
    # A generic's copy ends with the crate that instantiated it (v0: C<hash><len><name>),
    # which moves between crates with unrelated changes: any crate will do.
    m = re.search(r"Cs\*_([0-9]+)([A-Za-z_][A-Za-z0-9_]*)(\.\*)?$", name)
    if m and len(m[2]) == int(m[1]):
        name = name[:m.start()] + "*"
    return f"*({name})"


def main():
    builds = [(variant, *build(variant, extra_env)) for variant, extra_env in VARIANTS]
    # Reach the Bot API and the hosted model by their real names through the resolver, as
    # deployed (before any thread starts: entering namespaces needs a single thread).
    try:
        deployed_net.enter()
        api_addr, api_port, model_addr = deployed_net.ADDRESSES["api.telegram.org"], 443, \
            deployed_net.ADDRESSES["api.openai.com"]
    except (deployed_net.Unavailable, OSError) as e:
        print(f"hot-text: no private network namespace here ({e}): the stand-ins are reached"
              " at localhost, and the resolver's code is left out", file=sys.stderr)
        api_addr, api_port, model_addr = "127.0.0.1", free_port(), None
    work = Path(tempfile.mkdtemp(prefix="aegis-hot-text-"))
    api, stand_ins, model = None, None, None
    try:
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "error", "HOME": str(work)}
        cert = [str(TLS / "localhost.pem"), str(TLS / "localhost.key")]
        api = subprocess.Popen([sys.executable, str(ROOT / "scripts/stand-in-bot-api.py"),
                                f"{api_addr}:{api_port}", str(TLS / "localhost-rsa.pem"),
                                str(TLS / "localhost-rsa.key")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(api_port, time.monotonic() + 10, api_addr)
        # The harness in plain HTTP, the model in HTTPS: the same handler on two ports.
        stand_ins = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIns)
        model = http.server.ThreadingHTTPServer((model_addr or "127.0.0.1", 443 if model_addr else 0),
                                                StandIns)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*cert)
        model.socket = tls.wrap_socket(model.socket, server_side=True)
        for server in (stand_ins, model):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{stand_ins.server_address[1]}"
        # As deployed, the agent's default URL (api.openai.com) and the gateway's
        # (api.telegram.org) reach them.
        model_url = None if model_addr else f"https://localhost:{model.server_address[1]}/v1"
        api_url = "" if model_addr else f', "api_url": "https://localhost:{api_port}"'
        (work / "gateway.json").write_text(
            '{"telegram": {"bot_token": "1:hot", "instance": "none", "allowed_chats": ["*"]'
            f'{api_url}}}}}')
        gateway_args = ["--config", str(work / "gateway.json"), "--socket", str(work / "none.sock")]
        traced = []
        for crate, name in [("aegis_agent", "aegis-agent"), ("aegis_gateway", "aegis-gateway")]:
            for variant, folder, maps in builds:
                log = work / f"{crate}-{variant}.log"
                if crate == "aegis_agent":
                    # Idle as deployed (OpenAI's own URL, no SSL_CERT_FILE; nothing is sent),
                    # then a first message from a hosted model (HTTPS at api.openai.com,
                    # SSL_CERT_FILE naming the test CA), from a local one (plain HTTP) and
                    # from one on the host (`host:`, through the harness). What that last
                    # one runs until idle goes after every binary's idle code: among the
                    # agent's idle code it spread the gateway's over three more 64 KiB
                    # windows (1.64 -> 1.83 MiB).
                    runs = []
                    for kind, url, extra in [("idle", None, {}),
                                             ("https", model_url, {"SSL_CERT_FILE": str(TLS / "ca.pem")}),
                                             ("plain", f"{base}/v1", {}),
                                             ("host", None, {"AEGIS_MODEL": "host:ollama/hot"})]:
                        answers = kind != "idle"
                        port = free_port()
                        StandIns.agent_port = port
                        # A fresh workspace each: an agent skips a message it has already seen.
                        ws = work / f"ws-{variant}-{kind}"
                        ws.mkdir()
                        run_env = dict(env, AEGIS_AGENT_ADDR=f"127.0.0.1:{port}",
                                       AEGIS_WORKSPACE=str(ws), AEGIS_HARNESS_URL=base,
                                       OPENAI_API_KEY="sk-hot-text", **extra)
                        if url:
                            run_env["OPENAI_BASE_URL"] = url
                        steps = [first_message(port)] if answers else []
                        runs.append(trace(folder / name, [], run_env, log, port, steps))
                    (idle,), (_, https_message), (_, plain_message), (host_idle, host_message) = runs
                    phases = [idle, host_idle, https_message + plain_message + host_message]
                else:
                    gateway_env = dict(env, SSL_CERT_FILE=str(TLS / "rsa-ca.pem"))
                    phases = trace(folder / name, gateway_args, gateway_env, log)
                log.unlink()
                traced.append((f"{name} ({variant})", link_map(crate, maps), phases))
        # Phase by phase: every binary's idle code first (each binary's in turn, all
        # variants), then what an agent with a `host:` model adds until idle, then the
        # agent's first message, so that neither binary's idle code is spread by the
        # other's or by message handling.
        labels = ["until idle", "until idle with a host: model", "first message"]
        groups, named = [[] for _ in labels], set()
        for phase, label in enumerate(labels):
            for who, sections, phases in traced:
                if phase >= len(phases):
                    continue
                hot = hot_sections(sections, phases[phase])
                print(f"hot-text: {who}, {label}: {len(hot)} sections,"
                      f" {sum(s[1] for s in hot)} bytes", file=sys.stderr)
                for s in hot:
                    p = pattern(s[2], s[3])
                    if p and p not in named:
                        named.add(p)
                        groups[phase].append(p)
        untraced = [p for p in UNTRACED_IDLE if p not in named]
        write(groups[0] + untraced + groups[1] + groups[2])
        counts = [len(groups[0]), len(untraced), len(groups[1]), len(groups[2])]
        print(f"hot-text: wrote {OUT.relative_to(ROOT)} ({' + '.join(map(str, counts))}"
              " patterns)", file=sys.stderr)
    finally:
        if api:
            api.kill()
            api.wait()
        for server in (stand_ins, model):
            if server:
                server.shutdown()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def write(patterns):
    rustc = subprocess.run(["rustc", "-V"], stdout=subprocess.PIPE, text=True).stdout.strip()
    lines = [
        "/* Generated by scripts/hot-text.py (" + rustc + "); regenerate rather than edit.",
        "   The code aegis-agent and aegis-gateway run from exec until idle, then what an agent",
        "   with a host: model adds, then the code of the agent's first message (over HTTPS,",
        "   plain HTTP and through the host), in the order it first runs, placed before the rest of",
        "   .text (scripts/release.sh adds this to the default linker script): an idle",
        "   process then maps, and a cold start reads, a few pages of code instead of most",
        "   of the binary. Sections no pattern names stay where they were; a pattern that",
        "   names nothing is ignored. */",
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
