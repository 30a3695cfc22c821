#!/usr/bin/env python3
"""What never-finished HTTP requests cost the relay (issue 12, slow clients).

Starts a relay binary on a free loopback port (memory store, its own temporary data
directory), opens CONNECTIONS connections that each send the first line of a WebSocket
upgrade and one header and then nothing more, and reports:

- the growth of the relay's resident memory divided by the connections it still held when
  memory settled (bytes per pending connection);
- how many connections the relay refused at once, and how long after the last one was opened
  the relay had cut every other one (with a header timeout; the wait is bounded).

With `--websocket`, each connection completes a WebSocket upgrade on `/` instead and stays
idle: the same arithmetic then gives bytes per idle WebSocket, for comparison.

Every loop is bounded in count and time. Loopback only.

    cargo build --release -p backend --bin relay
    python3 bench/partial_requests.py --relay target/release/relay --connections 5000 \
        -- --header-timeout-ms 60000 --max-pending-connections 10000
"""

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time

PARTIAL = b"GET /ws HTTP/1.1\r\nHost: relay\r\n"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def upgraded(sock):
    """Reads the answer to UPGRADE; whether it was 101."""
    answer = b""
    while b"\r\n\r\n" not in answer and len(answer) < 4096:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        answer += chunk
    return answer.startswith(b"HTTP/1.1 101")


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_rss(pid, limit_s=15.0):
    """Resident memory once it moves less than 0.2% over half a second (at most limit_s)."""
    deadline = time.monotonic() + limit_s
    previous = rss(pid)
    while True:
        time.sleep(0.5)
        now = rss(pid)
        if abs(now - previous) * 500 < previous or time.monotonic() > deadline:
            return now
        previous = now


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port, limit_s=10.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the relay did not start listening")


def still_open(sock):
    """Whether the relay has neither answered nor closed this connection yet."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        pass
    # Data (an answer) or an EOF.
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", required=True, help="path of the relay binary")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument(
        "--cut-wait-secs",
        type=float,
        default=30.0,
        help="longest wait for the relay to cut the connections (0: do not wait)",
    )
    parser.add_argument(
        "--skip-memory",
        action="store_true",
        help="do not wait for memory to settle (for a header timeout shorter than that wait)",
    )
    parser.add_argument(
        "--websocket",
        action="store_true",
        help="complete a WebSocket upgrade on each connection instead",
    )
    parser.add_argument("relay_args", nargs="*", help="extra relay flags, after --")
    options = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        relay = subprocess.Popen(
            [
                options.relay,
                "--listen",
                f"127.0.0.1:{port}",
                "--store",
                "memory",
                "--data-dir",
                data,
                *options.relay_args,
            ],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "error"},
        )
        try:
            wait_listening(port)
            report = measure(relay.pid, port, options)
        finally:
            relay.terminate()
            relay.wait(timeout=30)
    print(json.dumps(report))


def measure(pid, port, options):
    before = settled_rss(pid)
    fds_before = fds(pid)
    opened, failed = [], 0
    started = time.monotonic()
    for _ in range(options.connections):
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            if options.websocket:
                sock.sendall(UPGRADE)
                if not upgraded(sock):
                    raise OSError("upgrade refused")
            else:
                sock.sendall(PARTIAL)
            opened.append(sock)
        except OSError:
            failed += 1
            sock.close()
    last_sent = time.monotonic()
    open_s = last_sent - started
    after = rss(pid) if options.skip_memory else settled_rss(pid)
    held = sum(1 for sock in opened if still_open(sock))
    relay_fds = fds(pid) - fds_before
    per_pending = (after - before) / held if held else float("nan")
    kind = "upgraded" if options.websocket else "partial"
    print(
        f"{kind:<9}{options.connections} {kind} requests (opened in {open_s:.2f} s): "
        f"{held} held, {len(opened) - held} already closed, {failed} failed to connect; "
        f"relay RSS {before / 1048576:.1f} MiB -> {after / 1048576:.1f} MiB, "
        f"{per_pending:.0f} bytes per held connection, {relay_fds} more fds",
        file=sys.stderr,
    )

    cut_s, uncut = None, held
    if options.cut_wait_secs > 0 and not options.websocket:
        selector = selectors.DefaultSelector()
        for sock in opened:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        remaining = len(opened)
        deadline = last_sent + options.cut_wait_secs
        while remaining and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    data = key.fileobj.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(key.fileobj)
                    remaining -= 1
        uncut = remaining
        if not remaining:
            cut_s = time.monotonic() - last_sent
        print(
            f"partial  every connection cut {cut_s:.2f} s after the last was opened "
            f"({cut_s + open_s:.2f} s after the first)"
            if cut_s is not None
            else f"partial  {uncut} connections still open after {options.cut_wait_secs} s",
            file=sys.stderr,
        )
    for sock in opened:
        sock.close()
    return {
        "scenario": "idle_websockets" if options.websocket else "partial_requests",
        "connections": options.connections,
        "failed": failed,
        "held": held,
        "open_s": open_s,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_pending": per_pending,
        "relay_fds_added": relay_fds,
        "cut_s": cut_s,
        "uncut": uncut,
    }


if __name__ == "__main__":
    main()
