#!/usr/bin/env python3
"""Run a command where api.telegram.org and api.openai.com are reached as a deployed kit
reaches them, through the resolver and port 443, but answered by local stand-ins.

Why: a deployed gateway and agent resolve those names (musl's resolver: /etc/resolv.conf,
a DNS query) and connect to port 443. A stand-in on `localhost:PORT` skips that code, so
footprint figures (scripts/size.sh) and the start-up list (scripts/hot-text.py) would
leave it out. Here the command runs in private mount and network namespaces (a user
namespace too when not root): only a loopback interface, /etc/resolv.conf replaced by one
naming a DNS stand-in on 127.0.0.1, which answers
    api.telegram.org -> 127.0.0.2     api.openai.com -> 127.0.0.3
(A records; other names and AAAA get no address), so stand-ins listen on those addresses,
port 443, with a certificate naming them (tests/fixtures/tls) and SSL_CERT_FILE naming its CA.
Nothing outside the namespaces changes, and nothing inside reaches the network.

Usage: scripts/deployed_net.py CMD [ARGS...]   (exit 3 when the namespaces are unavailable)
       import deployed_net; deployed_net.enter()  (the calling process, while single-threaded)
"""
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

ADDRESSES = {"api.telegram.org": "127.0.0.2", "api.openai.com": "127.0.0.3"}
UNAVAILABLE = 3

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


class Unavailable(Exception):
    """The namespaces cannot be made here (no user namespaces, a seccomp policy, ...)."""


def _libc_call(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise Unavailable(f"{name}: {os.strerror(err)}")


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", b"lo", 0))
        flags = struct.unpack("16sH14x", ifr)[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _answer(query):
    """The reply to one DNS query: an A record for a name in ADDRESSES, else no address."""
    (tid,) = struct.unpack(">H", query[:2])
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode("ascii", "replace"))
        i += query[i] + 1
    qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
    question = query[12:i + 5]
    address = ADDRESSES.get(".".join(labels).lower())
    answers = b""
    if address and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    # Authoritative answer for a known name (NOERROR, empty for AAAA); NXDOMAIN otherwise.
    flags = 0x8580 if address else 0x8583
    return struct.pack(">HHHHHH", tid, flags, 1, 1 if answers else 0, 0, 0) + question + answers


def _serve_dns(sock):
    while True:
        query, peer = sock.recvfrom(512)
        try:
            sock.sendto(_answer(query), peer)
        except (IndexError, struct.error):
            pass  # not a query we can parse: the resolver retries or gives up


def enter():
    """Move this process into the namespaces and start the DNS stand-in (a daemon thread).
    Must run before the process starts any thread. Raises Unavailable."""
    if not os.path.exists("/etc/resolv.conf"):
        raise Unavailable("no /etc/resolv.conf to replace")
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | (0 if uid == 0 else CLONE_NEWUSER)
    _libc_call("unshare", flags)
    if uid != 0:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    # Loopback first: should a step below fail, a caller that goes on at localhost still can.
    _loopback_up()
    # Mounts made here must not propagate back to the machine's namespace.
    _libc_call("mount", b"none", b"/", None, MS_REC | MS_PRIVATE, None)
    folder = tempfile.mkdtemp(prefix="aegis-deployed-net-")
    resolv = os.path.join(folder, "resolv.conf")
    _write(resolv, "nameserver 127.0.0.1\n")
    try:
        _libc_call("mount", resolv.encode(), b"/etc/resolv.conf", None, MS_BIND, None)
    finally:
        # The bind mount holds the file; the folder itself can go now.
        os.unlink(resolv)
        os.rmdir(folder)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 53))
    threading.Thread(target=_serve_dns, args=(dns,), daemon=True).start()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        enter()
    except (Unavailable, OSError) as e:
        print(f"deployed_net: no private network namespace here ({e})", file=sys.stderr)
        sys.exit(UNAVAILABLE)
    sys.exit(subprocess.run(sys.argv[1:]).returncode)


if __name__ == "__main__":
    main()
