"""Holds a live relay to docs/openapi.yaml: every documented operation and status.

    .tools/venv/bin/python scripts/api_conformance.py [RELAY_BINARY]

Default binary: target/debug/relay (scripts/test.sh builds it). Environment:
SCHEMATHESIS_EXAMPLES (test cases per operation and phase, default 50), SCHEMATHESIS_SEED
(to replay a run; schemathesis prints the seed of each run).

Three parts, each on relays started here and stopped at the end:

1. The document against the code: its error codes are exactly common's `ErrorCode`s.
2. Explicit requests with known answers: each documented status of each operation at least
   once, including those generated requests cannot reach (401 with a wrong key, 404
   `api_disabled` from a relay without keys, 405, 413 at the exact body limit, 416 after
   retention pruned, 429 with `Retry-After` from a relay with a tiny rate, 503 while another
   process holds the store's locks, a disconnect closing a real client with 4002). Each
   answer's status, `code`, headers and body are checked against the document, and the
   run fails if the document names an (operation, status) that no request here produced.
3. schemathesis (version pinned in scripts/api_test_requirements.txt) generating requests
   from the document, valid and invalid, and checking every answer: status documented,
   content type, body schema, headers, invalid input refused, valid input accepted, the key
   required, 405 for other methods.

Every failure is listed with its request, what was expected and what came back; the run
fails if any part failed. Run by scripts/test.sh.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import jsonschema_rs
import yaml

# No scripts/__pycache__/ left in the work tree by the import below.
sys.dont_write_bytecode = True

from api_test_support import (  # noqa: E402
    ROOT,
    TEST_KEY,
    Answer,
    Client,
    Relays,
    TestFailure,
    log,
    relay_binary,
    request,
    stop_on_sigterm,
    wait_for,
)

SPEC_PATH = ROOT / "docs" / "openapi.yaml"
SCHEMATHESIS = ROOT / ".tools" / "venv" / "bin" / "schemathesis"
SCHEMATHESIS_CONFIG = ROOT / "scripts" / "schemathesis.toml"
# A second key, for the rate limit's "each key has its own bucket".
OTHER_KEY = "other-key-0123456789abcdef"
# The relay's body limit with the default --max-message-bytes (65,536): 2 x that + 16 KiB.
MAX_BODY = 6 * 65536 + 16 * 1024
# The retention relay's: small, so that pruning can be seen.
RETENTION = 20


class Spec:
    """docs/openapi.yaml: its operations and what each response must look like."""

    def __init__(self, path: Path):
        self.document = yaml.safe_load(path.read_text())
        self.operations: dict[str, tuple[str, str]] = {}
        for template, item in self.document["paths"].items():
            for method, operation in item.items():
                self.operations[operation["operationId"]] = (method.upper(), template)
        self._validators: dict[tuple[str, int], jsonschema_rs.Validator] = {}

    def operation(self, op: str) -> dict:
        method, template = self.operations[op]
        return self.document["paths"][template][method.lower()]

    def response(self, op: str, status: int) -> dict | None:
        response = self.operation(op)["responses"].get(str(status))
        if response is not None and "$ref" in response:
            response = self.document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        return response

    def documented(self) -> set[tuple[str, int]]:
        return {
            (op, int(status))
            for op in self.operations
            for status in self.operation(op)["responses"]
        }

    def header_schema(self, header: dict) -> dict:
        if "$ref" in header:
            header = self.document["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        return header

    def problems(self, op: str, answer: Answer) -> list[str]:
        """What is wrong with `answer` as an answer of `op`, by the document."""
        response = self.response(op, answer.status)
        if response is None:
            return [f"status {answer.status} is not documented for {op}"]
        problems = []
        for name, header in response.get("headers", {}).items():
            header = self.header_schema(header)
            value = answer.headers.get(name)
            if value is None:
                if header.get("required"):
                    problems.append(f"no {name} header")
                continue
            schema = header["schema"]
            if schema.get("type") == "integer":
                try:
                    value = int(value)
                except ValueError:
                    problems.append(f"{name}: {value!r} is not an integer")
                    continue
            problems += [
                f"{name} header: {error.message}"
                for error in jsonschema_rs.Draft4Validator(schema).iter_errors(value)
            ]
        content = response.get("content")
        if content is None:
            return problems
        content_type = (answer.headers.get("content-type") or "").split(";")[0].strip()
        if content_type not in content:
            return problems + [f"content type {content_type!r}, documented: {list(content)}"]
        try:
            body = answer.json()
        except TestFailure as failure:
            return problems + [str(failure)]
        key = (op, answer.status)
        if key not in self._validators:
            # OpenAPI 3.0's schemas are JSON Schema draft 4 with extras; the response
            # schemas use none of the extras that change validation (no `nullable`). The
            # schema sits beside the document's components so that its $refs resolve.
            schema = content[content_type]["schema"]
            self._validators[key] = jsonschema_rs.Draft4Validator(
                {"components": self.document["components"], **schema}
            )
        problems += [
            f"body {error.instance_path}: {error.message}"
            for error in self._validators[key].iter_errors(body)
        ]
        return problems


def shorten(value, limit: int = 160) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Checks:
    """Explicit requests and their expected answers; collects every failure rather than
    stopping at the first, so one run lists everything the relay gets wrong."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.covered: set[tuple[str, int]] = set()
        self.passed = 0
        self.failures: list[str] = []

    def fail(self, label: str, detail: str) -> None:
        self.failures.append(f"{label}: {detail}")
        log(f"FAIL {label}: {detail}")

    def expect(
        self,
        address: str,
        op: str,
        status: int,
        label: str,
        *,
        body=None,
        path: str | None = None,
        method: str | None = None,
        key: str | None = TEST_KEY,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> Answer | None:
        """Sends one request for operation `op` (its documented method and path unless
        given) and checks the answer: `status`, `code` when given, and the document's
        headers and schema for that status. Returns the answer when all of it holds."""
        doc_method, template = self.spec.operations[op]
        method = method or doc_method
        path = "/api" + (path or template)
        described = f"{method} {path}" + (f" {shorten(body)}" if body is not None else "")
        try:
            answer = request(address, method, path, body=body, key=key, headers=headers)
        except OSError as err:
            self.fail(label, f"{described}: no answer ({err})")
            return None
        problems = []
        if answer.status != status:
            problems.append(f"expected {status}, got {answer.status}")
        else:
            problems += self.spec.problems(op, answer)
            if code is not None and not problems and answer.json().get("code") != code:
                problems.append(f"expected code {code!r}")
        if problems:
            self.fail(label, f"{described} -> {shorten(answer.describe(), 400)}: {'; '.join(problems)}")
            return None
        self.covered.add((op, status))
        self.passed += 1
        log(f"ok   {label}")
        return answer

    def check(self, label: str, condition: bool, detail: str) -> None:
        """A check on something other than one answer's shape."""
        if condition:
            self.passed += 1
            log(f"ok   {label}")
        else:
            self.fail(label, detail)


class Loop:
    """An asyncio loop on a thread of its own, for the WebSocket clients, while the checks
    send their HTTP requests one at a time from the main thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@contextmanager
def store_write_locked(data_dir: Path):
    """Another process's write transaction on the relay's SQLite store, held while the
    block runs: the relay's writes fail (it retries once, then gives up)."""
    connection = sqlite3.connect(data_dir / "relay.db", isolation_level=None, timeout=10)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


@contextmanager
def store_locked_out(data_dir: Path):
    """Every lock of the store's WAL index (bytes 120 to 127 of relay.db-shm, per SQLite's
    WAL file format) held by this process while the block runs: the relay can neither read
    nor write, and its reads fail after SQLite's retries (about 10 s)."""
    descriptor = os.open(data_dir / "relay.db-shm", os.O_RDWR)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120)
        yield
    finally:
        os.close(descriptor)  # releases the locks


def error_codes_in_common() -> list[str]:
    """The wire names in common/src/lib.rs's `error_codes! { ... }` list, in order."""
    source = (ROOT / "common" / "src" / "lib.rs").read_text()
    block = source[source.index("error_codes! {"):]
    return re.findall(r'^\s+[A-Z][A-Za-z]+ = "([a-z_]+)"', block, re.MULTILINE)


def check_document(spec: Spec, checks: Checks) -> None:
    documented = spec.document["components"]["schemas"]["ErrorCode"]["enum"]
    in_code = error_codes_in_common()
    checks.check(
        "the document's error codes are common's ErrorCode list, in its order",
        documented == in_code,
        f"only in docs/openapi.yaml: {sorted(set(documented) - set(in_code))}; "
        f"only in common/src/lib.rs: {sorted(set(in_code) - set(documented))}",
    )


def check_publish(a: str, checks: Checks, ada: Client, loop: Loop) -> None:
    first = {"room": "lobby", "text": "first", "from": "Shop", "idempotency_key": "evt-1"}
    published = checks.expect(a, "publish", 200, "publish: a new message", body=first)
    if published:
        original = published.json()
        checks.check("publish: a new message is not a duplicate", original["duplicate"] is False, str(original))

        def delivered(frames):
            return [
                frame for frame in ada.typed()
                if frame.get("type") == "message" and frame.get("offset") == original["offset"]
                and frame.get("room") == "lobby"
            ]

        try:
            message = loop.run(ada.wait("the published message", delivered))[0]
            checks.check(
                "publish: the typed client gets it with api: true, its sender and key",
                message.get("api") is True and message["text"] == "first"
                and message["from"] == "Shop" and message.get("id") == "evt-1",
                str(message),
            )
        except TestFailure as failure:
            checks.fail("publish: delivered to the typed client", str(failure))
        again = checks.expect(a, "publish", 200, "publish: the same key again", body=first)
        if again:
            repeat = again.json()
            checks.check(
                "publish: the same key answers the original's position, duplicate: true",
                repeat["duplicate"] is True
                and (repeat["offset"], repeat["ts"], repeat["epoch"])
                == (original["offset"], original["ts"], original["epoch"]),
                f"first {original}, again {repeat}",
            )
    checks.expect(a, "publish", 409, "publish 409: the key with another text", code="idempotency_conflict",
                  body={**first, "text": "changed"})
    checks.expect(a, "publish", 409, "publish 409: the key with another sender", code="idempotency_conflict",
                  body={**first, "from": "Someone else"})
    checks.expect(a, "publish", 200, "publish: optional fields null count as absent",
                  body={"room": "lobby", "text": "nulls", "from": None, "idempotency_key": None})
    checks.expect(a, "publish", 200, "publish: a text of 65,536 characters (the default limit)",
                  body={"room": "lobby", "text": "x" * 65536})
    checks.expect(a, "publish", 200, "publish: 32,768 two-byte characters (65,536 bytes)",
                  body={"room": "lobby", "text": "é" * 32768})

    bad = [
        ("bad_json", '{"room": "lobby", "text": ', "not JSON"),
        ("bad_json", "", "an empty body"),
        ("invalid_message", '["lobby", "hi"]', "an array of the fields' values"),
        ("invalid_message", '"lobby"', "a string"),
        ("invalid_message", {"room": "lobby"}, "no text"),
        ("invalid_message", {"room": "lobby", "text": 5}, "a number for text"),
        ("invalid_message", {"room": "lobby", "text": "hi", "idempotencyKey": "k"}, "an unknown field"),
        ("invalid_room", {"room": "Lobby", "text": "hi"}, "an upper-case room"),
        ("invalid_room", {"room": "r" * 33, "text": "hi"}, "a room of 33 characters"),
        ("invalid_room", {"room": "", "text": "hi"}, "an empty room"),
        ("empty_text", {"room": "lobby", "text": ""}, "an empty text"),
        ("empty_text", {"room": "lobby", "text": " \n\t\u3000\u00a0"}, "a text of white space"),
        ("text_too_long", {"room": "lobby", "text": "x" * 65537}, "65,537 characters"),
        ("text_too_long", {"room": "lobby", "text": "é" * 32769}, "65,538 bytes of UTF-8"),
        ("invalid_name", {"room": "lobby", "text": "hi", "from": " Shop"}, "from with a leading space"),
        ("invalid_name", {"room": "lobby", "text": "hi", "from": "n" * 33}, "from of 33 characters"),
        ("invalid_name", {"room": "lobby", "text": "hi", "from": "Sh\u0007op"}, "from with a control character"),
        ("invalid_name", {"room": "lobby", "text": "hi", "from": ""}, "an empty from"),
        ("invalid_id", {"room": "lobby", "text": "hi", "idempotency_key": ""}, "an empty key"),
        ("invalid_id", {"room": "lobby", "text": "hi", "idempotency_key": "k" * 65}, "a key of 65 characters"),
        ("invalid_id", {"room": "lobby", "text": "hi", "idempotency_key": "a\nb"}, "a key with a newline"),
    ]
    for code, body, what in bad:
        checks.expect(a, "publish", 400, f"publish 400 {code}: {what}", code=code, body=body)

    # The body limit, to the byte: at the limit the body is read (and this text refused for
    # its length); one byte over, 413 without reading it.
    def body_of(size: int) -> str:
        frame = '{"room":"lobby","text":"%s"}'
        return frame % ("x" * (size - len(frame % "")))

    checks.expect(a, "publish", 400, f"publish: a body of exactly {MAX_BODY} bytes is read",
                  code="text_too_long", body=body_of(MAX_BODY))
    checks.expect(a, "publish", 413, f"publish 413: a body of {MAX_BODY + 1} bytes", code="body_too_large",
                  body=body_of(MAX_BODY + 1))
    checks.expect(a, "publish", 413, "publish 413: a body of 1 MiB", code="body_too_large",
                  body=body_of(1 << 20))


def check_broadcast(a: str, checks: Checks) -> None:
    answer = checks.expect(a, "broadcast", 200, "broadcast: two rooms",
                           body={"rooms": ["lobby", "news"], "text": "to both"})
    if answer:
        results = answer.json()["results"]
        checks.check("broadcast: one published result per room, in order",
                     [r.get("room") for r in results] == ["lobby", "news"]
                     and all("offset" in r for r in results), str(results))
    checks.expect(a, "publish", 200, "publish: a key into one room", body={"room": "news", "text": "A", "idempotency_key": "bk-1"})
    answer = checks.expect(a, "broadcast", 200, "broadcast: one room refuses (its key was used), the other publishes",
                           body={"rooms": ["news", "sport"], "text": "B", "idempotency_key": "bk-1"})
    if answer:
        results = answer.json()["results"]
        checks.check(
            "broadcast: the refusing room has an idempotency_conflict error, the other an offset",
            results[0].get("error", {}).get("code") == "idempotency_conflict" and results[1].get("offset") == 1,
            str(results),
        )
    bad = [
        ("too_many_rooms", {"rooms": [], "text": "hi"}, "no rooms"),
        ("too_many_rooms", {"rooms": [f"r{n}" for n in range(101)], "text": "hi"}, "101 rooms"),
        ("invalid_message", {"rooms": ["a", "b", "a"], "text": "hi"}, "a room twice"),
        ("invalid_message", {"rooms": "lobby", "text": "hi"}, "rooms not a list"),
        ("invalid_message", '[["lobby"], "hi"]', "an array of the fields' values"),
        ("invalid_message", {"rooms": ["lobby"], "text": "hi", "room": "x"}, "an unknown field"),
        ("invalid_room", {"rooms": ["ok", "Not-ok"], "text": "hi"}, "an invalid room"),
        ("empty_text", {"rooms": ["lobby"], "text": "  "}, "a blank text"),
        ("text_too_long", {"rooms": ["lobby"], "text": "x" * 65537}, "65,537 characters"),
        ("invalid_name", {"rooms": ["lobby"], "text": "hi", "from": "x "}, "from with a trailing space"),
        ("invalid_id", {"rooms": ["lobby"], "text": "hi", "idempotency_key": "\u0000"}, "a key with NUL"),
        ("bad_json", "{rooms}", "not JSON"),
    ]
    for code, body, what in bad:
        checks.expect(a, "broadcast", 400, f"broadcast 400 {code}: {what}", code=code, body=body)
    checks.expect(a, "broadcast", 413, "broadcast 413: a body of 1 MiB", code="body_too_large",
                  body='{"rooms":["lobby"],"text":"' + "x" * (1 << 20) + '"}')


def check_reads(a: str, checks: Checks, ada_connection: int) -> None:
    answer = checks.expect(a, "listRooms", 200, "rooms: the open rooms")
    if answer:
        lobby = [room for room in answer.json()["rooms"] if room["room"] == "lobby"]
        checks.check("rooms: the lobby with its one member", len(lobby) == 1 and lobby[0]["members"] == 1,
                     str(answer.json()))
    answer = checks.expect(a, "roomPresence", 200, "presence: the lobby", path="/rooms/lobby/presence")
    if answer:
        members = answer.json()["members"]
        checks.check("presence: the typed client, by its connection id and name",
                     members == [{"connection": ada_connection, "name": "Ada"}], str(members))
    answer = checks.expect(a, "roomPresence", 200, "presence: a room nobody is in", path="/rooms/empty-room/presence")
    if answer:
        checks.check("presence: nobody", answer.json()["members"] == [], str(answer.json()))
    for room, what in [("Lobby", "upper case"), ("r" * 33, "33 characters"), ("a%20b", "a space"), ("%FF", "not UTF-8")]:
        checks.expect(a, "roomPresence", 400, f"presence 400 invalid_room: {what}", code="invalid_room",
                      path=f"/rooms/{room}/presence")
    answer = checks.expect(a, "stats", 200, "stats")
    if answer:
        stats = answer.json()
        checks.check("stats: counts what happened", stats["connections"] >= 1
                     and stats["messages_published"] >= 5 and stats["duplicates"] >= 1, str(stats))


def check_history(a: str, checks: Checks) -> None:
    for n in range(1, 6):
        checks.expect(a, "publish", 200, f"history: publish message {n} of 5",
                      body={"room": "paged", "text": f"page {n}", "idempotency_key": f"p-{n}"})
    newest = checks.expect(a, "roomHistory", 200, "history: the newest 2", path="/rooms/paged/history?limit=2")
    epoch = newest.json()["epoch"] if newest else "unknown"
    if newest:
        page = newest.json()
        checks.check("history: the newest 2 are offsets 4 and 5, top 5",
                     [m["offset"] for m in page["messages"]] == [4, 5] and page["top"] == 5
                     and all(m.get("api") is True for m in page["messages"]), str(page))
    seen, after, pages = [], 0, 0
    while pages < 5:
        answer = checks.expect(a, "roomHistory", 200, f"history: page after {after}",
                               path=f"/rooms/paged/history?after={after}&epoch={epoch}&limit=2")
        if answer is None:
            break
        page = answer.json()
        seen += [(m["offset"], m["text"], m.get("id")) for m in page["messages"]]
        pages += 1
        if not page["more"]:
            break
        after = page["messages"][-1]["offset"]
    checks.check("history: paging gives every message once, in order, with its key",
                 seen == [(n, f"page {n}", f"p-{n}") for n in range(1, 6)] and pages == 3, str(seen))
    answer = checks.expect(a, "roomHistory", 200, "history: after the newest, an empty page",
                           path="/rooms/paged/history?after=5")
    if answer:
        checks.check("history: nothing more", answer.json()["messages"] == [] and not answer.json()["more"],
                     str(answer.json()))
    answer = checks.expect(a, "roomHistory", 200, "history: a room with no messages",
                           path="/rooms/never-used/history")
    if answer:
        checks.check("history: top 0, no messages", answer.json()["top"] == 0 and answer.json()["messages"] == [],
                     str(answer.json()))

    answer = checks.expect(a, "roomHistory", 416, "history 416: past the newest", code="history_unavailable",
                           path="/rooms/paged/history?after=6")
    if answer:
        body = answer.json()
        checks.check("history 416: says what the room has (epoch, oldest 1, top 5)",
                     (body["epoch"], body["oldest"], body["top"]) == (epoch, 1, 5), str(body))
    checks.expect(a, "roomHistory", 416, "history 416: another epoch", code="history_unavailable",
                  path="/rooms/paged/history?after=1&epoch=not-this-one")

    bad = [
        ("limit=0", "limit 0"),
        ("limit=1001", "limit 1001"),
        ("after=-1", "a negative after"),
        ("after=abc", "after not a number"),
        ("after=18446744073709551616", "after over 64 bits"),
        ("before=3", "an unknown parameter"),
    ]
    for query, what in bad:
        checks.expect(a, "roomHistory", 400, f"history 400 invalid_message: {what}", code="invalid_message",
                      path=f"/rooms/paged/history?{query}")
    checks.expect(a, "roomHistory", 400, "history 400 invalid_room", code="invalid_room",
                  path="/rooms/Paged/history")


def check_retention(r: str, checks: Checks) -> None:
    """Relay R keeps the newest RETENTION messages of a room; a position before them is
    answered 416 once the pruning pass ran, never with the part still kept."""
    for n in range(RETENTION + 10):
        checks.expect(r, "publish", 200, f"retention: publish message {n + 1} of {RETENTION + 10}",
                      body={"room": "pruned", "text": f"old {n}"})
    try:
        body = wait_for(
            "the retention pass",
            lambda: (lambda got: got.status == 416 and got.json())(
                request(r, "GET", "/api/rooms/pruned/history?after=1")
            ),
        )
        checks.expect(r, "roomHistory", 416, "history 416: pruned by retention", code="history_unavailable",
                      path="/rooms/pruned/history?after=1")
        checks.check("history 416 after pruning: oldest is past the position, top is the newest",
                     body["oldest"] > 2 and body["top"] == RETENTION + 10, str(body))
    except TestFailure as failure:
        checks.fail("history 416: pruned by retention", str(failure))
    answer = checks.expect(r, "roomHistory", 200, "retention: the newest page is still served",
                           path="/rooms/pruned/history?limit=5")
    if answer:
        checks.check("retention: the newest 5, ending at the top",
                     [m["offset"] for m in answer.json()["messages"]] == list(range(RETENTION + 6, RETENTION + 11)),
                     str(answer.json()))


def check_store_failures(a: str, data_dir: Path, checks: Checks) -> None:
    body = {"room": "lobby", "text": "while the store is locked", "idempotency_key": "locked-1"}
    with store_write_locked(data_dir):
        checks.expect(a, "publish", 503, "publish 503: the store cannot be written", code="store_unavailable",
                      body=body)
        answer = checks.expect(a, "broadcast", 200, "broadcast while the store cannot be written",
                               body={"rooms": ["lobby", "news"], "text": "locked broadcast"})
        if answer:
            codes = [r.get("error", {}).get("code") for r in answer.json()["results"]]
            checks.check("broadcast: each room reports store_unavailable",
                         codes == ["store_unavailable"] * 2, str(answer.json()))
    answer = checks.expect(a, "publish", 200, "publish: the same key once the store is back", body=body)
    if answer:
        checks.check("publish: the refused message was not stored (no duplicate)",
                     answer.json()["duplicate"] is False, str(answer.json()))
    started = time.monotonic()
    with store_locked_out(data_dir):
        checks.expect(a, "roomHistory", 503, "history 503: the store cannot be read", code="store_unavailable",
                      path="/rooms/paged/history?after=0")
    log(f"     (the relay took {time.monotonic() - started:.1f} s to give up reading)")
    checks.expect(a, "roomHistory", 200, "history: readable again once the store is back",
                  path="/rooms/paged/history?after=0")


def check_disconnect(a: str, checks: Checks, ada: Client, ada_connection: int, loop: Loop) -> None:
    bad = [
        ("bad_json", "{connection: 1}", "not JSON"),
        ("invalid_message", {"connection": "1"}, "a string id"),
        ("invalid_message", {"connection": -1}, "a negative id"),
        ("invalid_message", {"connection": 1.5}, "a fractional id"),
        ("invalid_message", {}, "no id"),
        ("invalid_message", "[18446744073709551615]", "an array of the fields' values"),
        ("invalid_message", {"connection": 1, "all": True}, "an unknown field"),
        ("invalid_message", {"connection": 1, "user": "ada"}, "both a connection and a user"),
    ]
    for code, body, what in bad:
        checks.expect(a, "disconnect", 400, f"disconnect 400 {code}: {what}", code=code, body=body)
    checks.expect(a, "disconnect", 413, "disconnect 413: a body of 1 MiB", code="body_too_large",
                  body='{"connection":' + " " * (1 << 20) + "1}")
    checks.expect(a, "disconnect", 404, "disconnect 404: no such connection", code="not_found",
                  body={"connection": 18446744073709551615})
    checks.expect(a, "disconnect", 404, "disconnect 404: no connection of that user", code="not_found",
                  body={"user": "nobody"})
    answer = checks.expect(a, "disconnect", 200, "disconnect: the typed client", body={"connection": ada_connection})
    if answer:
        checks.check("disconnect: one connection", answer.json() == {"disconnected": 1}, str(answer.json()))
        try:
            code, _ = loop.run(ada.wait_closed())
            checks.check("disconnect: the client is closed with 4002", code == 4002, f"closed with {code}")
        except TestFailure as failure:
            checks.fail("disconnect: the client is closed", str(failure))
    checks.expect(a, "disconnect", 404, "disconnect 404: the same connection again", code="not_found",
                  body={"connection": ada_connection})


def valid_request(op: str) -> dict:
    """A request `op` would answer 200 to, as keyword arguments of Checks.expect."""
    return {
        "publish": {"body": {"room": "lobby", "text": "hi"}},
        "broadcast": {"body": {"rooms": ["lobby"], "text": "hi"}},
        "listRooms": {},
        "roomHistory": {"path": "/rooms/lobby/history"},
        "roomPresence": {"path": "/rooms/lobby/presence"},
        "stats": {},
        "disconnect": {"body": {"connection": 1}},
    }[op]


def check_every_operation(a: str, spec: Spec, checks: Checks) -> None:
    """What every operation shares: the key, other methods, paths that are no operation."""
    for op, (method, _) in spec.operations.items():
        valid = valid_request(op)
        checks.expect(a, op, 401, f"{op} 401: no Authorization", code="unauthorized", key=None, **valid)
        checks.expect(a, op, 401, f"{op} 401: a wrong key", code="unauthorized", key="wrong-key-0123456789abcdef",
                      **valid)
        checks.expect(a, op, 401, f"{op} 401: the key under another scheme", code="unauthorized", key=None,
                      headers={"Authorization": f"Basic {TEST_KEY}"}, **valid)
        other = "DELETE" if method == "GET" else "GET"
        answer = checks.expect(a, op, 405, f"{op} 405: {other}", code="method_not_allowed", method=other,
                               **{k: v for k, v in valid.items() if k == "path"})
        if answer:
            allowed = [m.strip() for m in answer.headers.get("allow", "").split(",")]
            checks.check(f"{op} 405: Allow names {method}", method in allowed, f"Allow: {allowed}")
    checks.expect(a, "publish", 200, "the Bearer scheme in lower case", key=None,
                  headers={"Authorization": f"bearer {TEST_KEY}"}, body={"room": "lobby", "text": "hi"})
    # Paths that name no operation: 404 not_found (no operation of the document to hold
    # the answer to, so checked here by hand).
    for path in ["/api/nothing-here", "/api/rooms/lobby", "/api/publish/", "/api", "/api/"]:
        answer = request(a, "GET", path)
        ok = (
            answer.status == 404
            and (answer.headers.get("content-type") or "").startswith("application/json")
            and _json_code(answer) == "not_found"
        )
        checks.check(f"GET {path}: 404 not_found", ok, f"GET {path} -> {answer.describe()}")


def _json_code(answer: Answer):
    try:
        return answer.json().get("code")
    except (TestFailure, AttributeError):
        return None


def check_rate_limit(b: str, spec: Spec, checks: Checks) -> None:
    """Relay B: 3 requests in a burst per key, then one every 10 s."""
    for n in range(3):
        checks.expect(b, "stats", 200, f"rate: request {n + 1} of the burst")
    for op in spec.operations:
        answer = checks.expect(b, op, 429, f"{op} 429: over the key's rate", code="rate_limited",
                               **valid_request(op))
        if answer:
            checks.check(f"{op} 429: Retry-After is the wait for the next token (1 to 10 s)",
                         1 <= int(answer.headers["retry-after"]) <= 10, f"Retry-After: {answer.headers['retry-after']}")
    checks.expect(b, "stats", 200, "rate: another key has its own bucket", key=OTHER_KEY)
    checks.expect(b, "stats", 401, "rate: a wrong key is refused as such, not rate limited",
                  code="unauthorized", key="wrong-key-0123456789abcdef")


def check_api_disabled(c: str, spec: Spec, checks: Checks) -> None:
    """Relay C: no key, so no API."""
    for op in spec.operations:
        checks.expect(c, op, 404, f"{op} 404: a relay without keys", code="api_disabled",
                      **valid_request(op))
        checks.expect(c, op, 404, f"{op} 404: a relay without keys, with a key sent", code="api_disabled",
                      key=None, headers={"Authorization": "Bearer anything-0123456789"}, **valid_request(op))


def run_explicit(relays: Relays, spec: Spec, checks: Checks) -> object:
    """Part 2; returns relay A for part 3."""
    # Defaults but for the rate: schemathesis sends hundreds of requests a second.
    relay_a = relays.start("api", "--api-key", TEST_KEY, "--api-rate-per-sec", "1000000",
                           "--api-rate-burst", "1000000")
    # Retention small and frequent enough to see pruning (416) within the test.
    relay_r = relays.start("retention", "--api-key", TEST_KEY, "--retention-messages", str(RETENTION),
                           "--history-len", "10", "--prune-interval-ms", "100")
    relay_b = relays.start("rate", "--store", "memory", "--api-key", TEST_KEY, "--api-key", OTHER_KEY,
                           "--api-rate-per-sec", "0.1", "--api-rate-burst", "3")
    relay_c = relays.start("off", "--store", "memory")
    a = relay_a.address

    loop = Loop()
    try:
        ada = loop.run(Client.connect(a, "/ws", "typed client"))
        loop.run(ada.ws.send('{"type":"join","room":"lobby","name":"Ada"}'))
        welcome = loop.run(ada.wait("welcome", lambda _: [f for f in ada.typed() if f.get("type") == "welcome"]))[0]
        loop.run(ada.wait("joined", lambda _: any(f.get("type") == "joined" for f in ada.typed())))
        ada_connection = welcome["connection"]

        check_publish(a, checks, ada, loop)
        check_broadcast(a, checks)
        check_reads(a, checks, ada_connection)
        check_history(a, checks)
        check_retention(relay_r.address, checks)
        check_store_failures(a, relay_a.data_dir, checks)
        check_every_operation(a, spec, checks)
        check_disconnect(a, checks, ada, ada_connection, loop)
        check_rate_limit(relay_b.address, spec, checks)
        check_api_disabled(relay_c.address, spec, checks)
    finally:
        loop.stop()

    missing = sorted(spec.documented() - checks.covered)
    checks.check(
        "every documented (operation, status) was answered as documented at least once",
        not missing,
        "never seen answered as documented: " + ", ".join(f"{op} {status}" for op, status in missing),
    )
    return relay_a


def run_schemathesis(address: str, workdir: Path) -> tuple[bool, str]:
    """Part 3. Returns whether it passed and its summary line."""
    examples = os.environ.get("SCHEMATHESIS_EXAMPLES", "50")
    command = [
        str(SCHEMATHESIS), "--config-file", str(SCHEMATHESIS_CONFIG), "--no-color",
        "run", str(SPEC_PATH), "--url", f"http://{address}/api",
        "--phases", "examples,coverage,fuzzing",
        # Every check but those about resources created and deleted across requests and
        # about several users' objects: this API has neither.
        "--checks", "all",
        "--exclude-checks", "use_after_free,ensure_resource_availability,object_level_authorization",
        "--max-examples", examples,
        # One worker: two cores, and Python 3.11's AST parser (used by hypothesis) is not
        # safe across threads ("AST constructor recursion depth mismatch").
        "--workers", "1",
        "--request-timeout", "20",
    ]
    if os.environ.get("SCHEMATHESIS_SEED"):
        command += ["--seed", os.environ["SCHEMATHESIS_SEED"]]
    log("$ " + " ".join(command))
    scratch = workdir / "schemathesis"
    scratch.mkdir(exist_ok=True)
    try:
        # Run from a scratch directory: hypothesis writes .hypothesis/ where it runs.
        result = subprocess.run(
            command, cwd=scratch, env={**os.environ, "RELAY_API_KEY": TEST_KEY},
            stdin=subprocess.DEVNULL, timeout=300, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    except subprocess.TimeoutExpired as expired:
        return False, f"schemathesis did not finish within 300 s:\n{expired.output or ''}"
    print(result.stdout, flush=True)
    summary = [line for line in result.stdout.splitlines() if line.startswith("=") and " in " in line]
    return result.returncode == 0, (summary[-1].strip("= ") if summary else f"exit {result.returncode}")


def main() -> int:
    stop_on_sigterm()
    binary = relay_binary(sys.argv[1] if len(sys.argv) > 1 else None)
    if not SCHEMATHESIS.exists():
        raise SystemExit(f"{SCHEMATHESIS} is missing: run scripts/setup.sh --test")
    spec = Spec(SPEC_PATH)
    checks = Checks(spec)
    started = time.monotonic()
    with Relays(binary) as relays:
        log("== 1. the document against the code")
        check_document(spec, checks)
        log("== 2. explicit requests")
        try:
            relay_a = run_explicit(relays, spec, checks)
        except Exception as failure:  # a broken check must not hide the others' results
            checks.fail("explicit requests stopped", f"{type(failure).__name__}: {failure}")
            traceback.print_exc()
            relay_a = relays.started[0] if relays.started else None
        explicit_seconds = time.monotonic() - started
        log(f"== 3. schemathesis (explicit requests took {explicit_seconds:.0f} s)")
        if relay_a is not None and relay_a.process.poll() is None:
            ok, summary = run_schemathesis(relay_a.address, relays.workdir)
            checks.check(f"schemathesis: {summary}", ok, summary)
        else:
            checks.fail("schemathesis", "not run: the relay is not running")
        if checks.failures:
            log(f"\n{len(checks.failures)} conformance failures:")
            for failure in checks.failures:
                log(f"  - {failure}")
            # Keeps the relay logs (Relays prints their ends) for a closer look.
            print(f"{checks.passed} passed, {len(checks.failures)} failed")
            raise SystemExit(1)
    log(f"conformance checked in {time.monotonic() - started:.0f} s")
    print(f"{checks.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
