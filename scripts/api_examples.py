"""Runs examples/ against a live relay, as a tutorial reader would, and checks that the
messages they publish reach connected clients.

    .tools/venv/bin/python scripts/api_examples.py [RELAY_BINARY]

Starts a relay (default: target/debug/relay) with an API key, connects a typed client
(/ws, joined to the lobby) and a plain client (/), then runs the PHP, Python and curl
examples, each publishing its own text. Each text must reach the typed client as one
`message` with `"api": true` at the offset the example was answered, and the plain
client byte for byte, once, in publication order. The PHP example also publishes the same
business event twice with one idempotency key: the second answer is the first's offset
with `duplicate: true`, and the clients get the text once. Run by scripts/test.sh.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

# No scripts/__pycache__/ left in the work tree by the import below.
sys.dont_write_bytecode = True

from api_test_support import (  # noqa: E402
    ROOT,
    TEST_KEY,
    Client,
    Relays,
    TestFailure,
    log,
    relay_binary,
    request,
    stop_on_sigterm,
    wait_for,
)

# One text per example, each with something a careless client would mangle: JSON inside
# the text, non-ASCII, HTML, quotes, control characters, white space at the ends.
TEXTS = {
    "php": '{"order":42,"status":"shipped","note":"Zoë’s parcel ✓"}',
    "python": 'Python: <b>not HTML</b> & "quotes" — ünïcödé',
    "curl": "curl:\ttab, back\\slash, new\nline ",
}


async def run_example(name: str, command: list[str], relay_url: str) -> dict:
    """Runs one example's command line; returns the answer it printed."""
    env = {**os.environ, "RELAY_URL": relay_url, "RELAY_API_KEY": TEST_KEY}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    except asyncio.TimeoutError:
        process.kill()
        raise TestFailure(f"{name} example did not finish within 30 s") from None
    if process.returncode != 0:
        raise TestFailure(
            f"{name} example exited {process.returncode}: stdout {out!r}, stderr {err!r}"
        )
    try:
        answer = json.loads(out)
    except ValueError:
        raise TestFailure(f"{name} example printed no JSON answer: {out!r}") from None
    log(f"  {name}: {answer} ({time.monotonic() - started:.1f} s)")
    return answer


def api_messages(typed: Client, text: str) -> list[dict]:
    return [
        frame
        for frame in typed.typed()
        if frame.get("type") == "message" and frame.get("room") == "lobby" and frame.get("text") == text
    ]


async def check(relay_address: str) -> int:
    relay_url = f"http://{relay_address}"
    plain = await Client.connect(relay_address, "/", "plain client")
    typed = await Client.connect(relay_address, "/ws", "typed client")
    passed = 0
    try:
        await typed.ws.send(json.dumps({"type": "join", "room": "lobby", "name": "Ada"}))
        await typed.wait("joined", lambda _: any(f.get("type") == "joined" for f in typed.typed()))
        # Both are members before anything is published (the plain client joins the lobby
        # on connecting, under a guest name).
        await asyncio.to_thread(
            wait_for,
            "both clients in the lobby's presence",
            lambda: len(request(relay_address, "GET", "/api/rooms/lobby/presence").json()["members"]) == 2,
        )

        # A business event gets its key once, from what happened, not from the attempt.
        event_key = f"order-42-shipped-{os.getpid()}"
        php = ["php", "examples/php/publish.php", "lobby", TEXTS["php"], event_key]
        answers = {"php": await run_example("php", php, relay_url)}
        again = await run_example("php (same event again)", php, relay_url)
        if again.get("duplicate") is not True or again.get("offset") != answers["php"]["offset"]:
            raise TestFailure(
                f"the same idempotency key again answered {again}, expected duplicate: true at "
                f"offset {answers['php']['offset']}"
            )
        passed += 1
        answers["python"] = await run_example(
            "python", ["python3", "examples/python/publish.py", "lobby", TEXTS["python"]], relay_url
        )
        answers["curl"] = await run_example(
            "curl", ["examples/curl/publish.sh", "lobby", TEXTS["curl"]], relay_url
        )

        for name, answer in answers.items():
            if answer.get("room") != "lobby" or answer.get("duplicate") is not False:
                raise TestFailure(f"{name} example's answer {answer}: expected a new message in the lobby")
        offsets = [answers[name]["offset"] for name in TEXTS]
        if offsets != sorted(offsets) or len(set(offsets)) != 3:
            raise TestFailure(f"offsets {offsets} are not increasing in publication order")

        for name, text in TEXTS.items():
            found = await typed.wait(f"the {name} example's message", lambda _: api_messages(typed, text))
            message = found[0]
            if message.get("api") is not True or message.get("offset") != answers[name]["offset"]:
                raise TestFailure(
                    f"typed client got {message}: expected api: true at offset {answers[name]['offset']}"
                )
            if message.get("from") != "server":
                raise TestFailure(f"typed client got from {message.get('from')!r}, expected 'server'")
            await plain.wait(f"the {name} example's text", lambda frames: text in frames)
            passed += 2
            log(f"ok {name}: typed client got offset {message['offset']} with api: true; plain client got the exact text")

        # The curl text was published last, so anything sent twice before it is in by now.
        for name, text in TEXTS.items():
            typed_count, plain_count = len(api_messages(typed, text)), plain.frames.count(text)
            if typed_count != 1 or plain_count != 1:
                raise TestFailure(
                    f"the {name} text arrived {typed_count} times at the typed client and "
                    f"{plain_count} times at the plain client; expected once each"
                )
        api_texts = [frame for frame in plain.frames if frame in TEXTS.values()]
        if api_texts != list(TEXTS.values()):
            raise TestFailure(f"the plain client got {api_texts}, expected them in publication order")
        passed += 1
        log("ok each text arrived once, in order; the repeated PHP event was not delivered again")
    finally:
        await typed.close()
        await plain.close()
    return passed


TOKEN_SECRET = "examples-token-secret-of-at-least-32-bytes"


async def check_token(relay_address: str) -> int:
    """examples/php/token.php mints a token the relay accepts: the user is who it names,
    with exactly the rooms it grants."""
    minted = subprocess.run(
        ["php", "examples/php/token.php", "ada", "Ada", "support-*=read,write"],
        cwd=ROOT,
        env={**os.environ, "RELAY_AUTH_HMAC_SECRET": TOKEN_SECRET},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if minted.returncode != 0:
        raise TestFailure(f"examples/php/token.php failed: {minted.stderr}")
    client = await Client.connect(relay_address, "/ws", "token client")
    try:
        await client.ws.send(json.dumps({"type": "auth", "token": minted.stdout.strip()}))
        frames = await client.wait("authenticated", lambda fs: [json.loads(f) for f in fs if '"authenticated"' in f])
        if (frames[0].get("user"), frames[0].get("name")) != ("ada", "Ada"):
            raise TestFailure(f"the PHP token authenticated as {frames[0]}, expected ada / Ada")
        await client.ws.send(json.dumps({"type": "join", "room": "support-1", "name": "x"}))
        await client.wait("joined support-1", lambda fs: any('"joined"' in f for f in fs))
        await client.ws.send(json.dumps({"type": "join", "room": "billing", "name": "x"}))
        await client.wait("forbidden for billing", lambda fs: any('"forbidden"' in f for f in fs))
    finally:
        await client.close()
    log("ok php token: the relay took it for ada / Ada with exactly its rooms")
    return 1


def main() -> int:
    stop_on_sigterm()
    binary = relay_binary(sys.argv[1] if len(sys.argv) > 1 else None)
    started = time.monotonic()
    with Relays(binary) as relays:
        relay = relays.start("examples", "--api-key", TEST_KEY)
        token_relay = relays.start("token", "--auth-hmac-secret", TOKEN_SECRET)
        try:
            passed = asyncio.run(check(relay.address))
            passed += asyncio.run(check_token(token_relay.address))
        except TestFailure as failure:
            log(f"FAILED: {failure}")
            print("0 passed, 1 failed")
            raise SystemExit(1) from None
    log(f"examples checked in {time.monotonic() - started:.1f} s")
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
