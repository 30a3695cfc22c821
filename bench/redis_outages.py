#!/usr/bin/env python3
"""Memory and connections of two relay nodes across repeated Redis outages (issue 14).

Starts a redis-server (append-only file fsynced on every write) on a free loopback port with
a directory of its own, and two relay nodes on it (the binary given with --relay). CLIENTS
typed clients, half on each node, in ROOMS rooms, each send a message every 0.2 s and read
everything. After a 10 s warm-up, Redis is killed (SIGKILL), left down for 1 s and
restarted, OUTAGES times, 2.5 s apart; then 10 s of quiet traffic. Prints each node's
resident memory (KiB) every five outages with the counts of messages sent, acknowledged,
refused (`store_unavailable`, while Redis was away) and received, and client reconnects;
then whether both nodes are still running.

Every loop is bounded in count and time. Loopback only. Needs the `websockets` package
(`.tools/venv` after `scripts/setup.sh --test`) and Debian's redis-server.

    cargo build --release -p backend --bin relay
    .tools/venv/bin/python bench/redis_outages.py --relay target/release/relay --outages 60
"""

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import tempfile

import websockets

CLIENTS = 100
ROOMS = 10


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


async def wait_for_port(port):
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


class Counts(dict):
    def __init__(self):
        super().__init__(sent=0, acked=0, refused=0, received=0, reconnects=0)


async def client(index, port, stop, counts):
    """Joins its room and sends every 0.2 s until `stop`; reconnects (bounded by `stop`)."""
    room = f"r{index % ROOMS}"
    sent = 0
    while not stop.is_set():
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.recv()  # welcome
                await ws.send(json.dumps({"type": "join", "room": room, "name": f"c{index}"}))

                async def read():
                    async for frame in ws:
                        kind = json.loads(frame).get("type")
                        if kind == "message":
                            counts["received"] += 1
                        elif kind == "ack":
                            counts["acked"] += 1
                        elif kind == "error":
                            counts["refused"] += 1

                reader = asyncio.create_task(read())
                while not stop.is_set() and not reader.done():
                    sent += 1
                    await ws.send(json.dumps(
                        {"type": "send", "room": room, "id": f"c{index}-{sent}", "text": f"m{sent}"}))
                    counts["sent"] += 1
                    await asyncio.sleep(0.2 + random.random() * 0.05)
                reader.cancel()
        except (OSError, websockets.WebSocketException):
            counts["reconnects"] += 1
            await asyncio.sleep(0.2)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", required=True, help="the relay binary")
    parser.add_argument("--outages", type=int, default=20)
    options = parser.parse_args()

    work = tempfile.TemporaryDirectory()
    redis_port = free_port()
    redis_args = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir",
                  work.name, "--save", "", "--appendonly", "yes", "--appendfsync", "always"]

    def start_redis():
        return subprocess.Popen(redis_args, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    redis = start_redis()
    await wait_for_port(redis_port)
    ports = [free_port(), free_port()]
    nodes = [subprocess.Popen(
        [options.relay, "--listen", f"127.0.0.1:{port}", "--static-dir", "/nonexistent",
         "--data-dir", f"{work.name}/data-{port}", "--engine", "redis",
         "--redis-url", f"redis://127.0.0.1:{redis_port}/",
         "--rate-per-sec", "1000000", "--rate-burst", "1000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        for port in ports:
            await wait_for_port(port)
        counts = Counts()
        stop = asyncio.Event()
        clients = [asyncio.create_task(client(i, ports[i % 2], stop, counts))
                   for i in range(CLIENTS)]

        def report(when):
            print(f"{when}: RSS KiB {[rss_kib(node.pid) for node in nodes]} {dict(counts)}",
                  flush=True)

        await asyncio.sleep(10)
        report("warm")
        for outage in range(1, options.outages + 1):
            redis.send_signal(signal.SIGKILL)
            redis.wait()
            await asyncio.sleep(1.0)
            redis = start_redis()
            await wait_for_port(redis_port)
            await asyncio.sleep(1.5)
            if outage % 5 == 0:
                report(f"after {outage} outages")
        await asyncio.sleep(10)
        report("settled")
        print("nodes running:", [node.poll() is None for node in nodes])
        stop.set()
        await asyncio.sleep(1)
        for task in clients:
            task.cancel()
    finally:
        for node in nodes:
            node.send_signal(signal.SIGTERM)
        redis.send_signal(signal.SIGTERM)
        for process in [*nodes, redis]:
            process.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
