"""What the HTTP API tests share: relay processes, HTTP requests, WebSocket clients.

Imported by scripts/api_conformance.py and scripts/api_examples.py, which run with the
Python of .tools/venv (scripts/setup.sh --test installs it). Every wait here is bounded,
every relay started here is stopped when the test ends, however it ends.
"""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent

# A key for test relays only: long enough for the relay (16 bytes at least), and never a
# real one.
TEST_KEY = "test-key-0123456789abcdef"

# How long one HTTP request may take. Generous: a request the relay is meant to answer 503
# waits for SQLite's lock retries first (about 10 s).
HTTP_TIMEOUT = 30.0


class TestFailure(Exception):
    """A check failed: what was expected and what happened."""


def log(message: str) -> None:
    print(message, flush=True)


def stop_on_sigterm() -> None:
    """Turns SIGTERM (scripts/test.sh's cleanup, a CI timeout) into SystemExit, so that the
    `finally` blocks stop the relays this process started instead of leaving them behind."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _die_with_parent() -> None:
    """In a relay's process before it starts: Linux sends it SIGTERM if this test process
    dies without stopping it (SIGKILL, a crash), so no relay outlives its test."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the `finally` blocks still stop relays on every ordinary exit


@dataclass
class Relay:
    """A relay process on a free loopback port, with its own data directory and log."""

    name: str
    process: subprocess.Popen
    address: str
    data_dir: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclass
class Relays:
    """Starts relays in one scratch directory and stops them all at the end (a context
    manager), printing the end of each one's log when the test failed."""

    binary: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relay-api-test-")))
    started: list[Relay] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Relay:
        data_dir = self.workdir / f"{name}-data"
        log_path = self.workdir / f"{name}.log"
        command = [str(self.binary), "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *args]
        with open(log_path, "wb") as log_file:
            # From the project's root, as scripts/run.sh starts it: the web client in dist/
            # (when built) is served beside the API, as in production.
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        relay = Relay(name, process, "", data_dir, log_path)
        self.started.append(relay)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = re.search(r"listening on http://([0-9.:]+)", log_path.read_text(errors="replace"))
            if found:
                relay.address = found.group(1)
                return relay
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise TestFailure(f"relay {name} did not start ({' '.join(command)}):\n{relay.log_tail()}")

    def __enter__(self) -> Relays:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        for relay in self.started:
            relay.stop()
        if kind is not None and kind is not KeyboardInterrupt:
            for relay in self.started:
                log(f"--- end of relay {relay.name}'s log ({relay.log_path}) ---\n{relay.log_tail()}")
        else:
            # Kept on failure for a closer look; removed when everything passed.
            subprocess.run(["rm", "-rf", str(self.workdir)], check=False)


@dataclass
class Answer:
    """An HTTP response, read whole."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise TestFailure(f"not JSON ({err}): {self.body[:300]!r}") from None

    def describe(self) -> str:
        return f"{self.status} {self.headers.get('content-type')} {self.body[:300]!r}"


def request(
    address: str,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = TEST_KEY,
) -> Answer:
    """One HTTP/1.1 request on a fresh connection. `body` as a dict is sent as JSON (UTF-8,
    not ASCII-escaped); `key` None sends no Authorization header."""
    all_headers = dict(headers or {})
    if key is not None:
        all_headers.setdefault("Authorization", f"Bearer {key}")
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False)
        all_headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def wait_for(what: str, condition, timeout: float = 10.0, interval: float = 0.05):
    """Polls `condition()` until it returns something true, and returns it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TestFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Client:
    """A WebSocket client of a relay, reading every frame it is sent into a list in the
    background, so that a test can ask whether something arrived within a time."""

    def __init__(self, ws, label: str):
        self.ws = ws
        self.label = label
        self.frames: list[str] = []
        self.closed: tuple[int | None, str] | None = None
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, address: str, path: str, label: str) -> Client:
        # No Origin header: the relay lets scripts and services without one connect.
        ws = await asyncio.wait_for(
            websockets.connect(f"ws://{address}{path}", max_size=None, open_timeout=10),
            timeout=15,
        )
        return cls(ws, label)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame if isinstance(frame, str) else frame.decode())
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason or "")
        self._arrived.set()

    async def wait(self, what: str, found, timeout: float = 10.0):
        """Waits until `found(frames)` returns something true, and returns it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = found(self.frames)
            if value:
                return value
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or (self.closed is not None and not value):
                tail = "\n  ".join(frame[:200] for frame in self.frames[-5:])
                raise TestFailure(
                    f"{self.label}: {what} did not arrive within {timeout:.0f} s "
                    f"(closed: {self.closed}; last frames:\n  {tail})"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        except asyncio.TimeoutError:
            raise TestFailure(f"{self.label}: still open after {timeout:.0f} s") from None
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

    def typed(self) -> list[dict]:
        """The JSON frames received (typed clients)."""
        return [json.loads(frame) for frame in self.frames]


def relay_binary(argument: str | None) -> Path:
    """The relay binary to test: the argument, or the debug build scripts/test.sh makes."""
    path = Path(argument) if argument else ROOT / "target" / "debug" / "relay"
    if not os.access(path, os.X_OK):
        raise SystemExit(f"no relay binary at {path}: build it (cargo build -p backend) or name one")
    return path.resolve()
