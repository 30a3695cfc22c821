#!/usr/bin/env python3
"""Push an event from a Python application to the browsers in a room of the relay, through
the relay's HTTP API (docs/openapi.yaml). Standard library only; Python 3.8+.

From the command line:

    export RELAY_URL=http://localhost:8080 RELAY_API_KEY=your-key
    python3 examples/python/publish.py lobby 'hello'
    python3 examples/python/publish.py lobby '{"order":42,"status":"shipped"}' order-42-shipped

From your application: import relay_publish from this file (or copy it).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request


class RelayError(Exception):
    """The relay refused a request: the HTTP status and the relay's JSON error."""

    def __init__(self, status, code, message, body=None):
        super().__init__(f"relay answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.body = body or {}


def relay_publish(room, text, key, idempotency_key=None, relay_url=None, sender=None):
    """Publishes `text` into `room` and returns the relay's answer once the message is
    stored: {"room", "epoch", "offset", "ts", "duplicate"}.

    `idempotency_key` makes the call safe to repeat. Mint it from the business event, not
    from the attempt: "order-42-shipped" is published once however often it is sent, and a
    repeat answers the original's offset with "duplicate": True. With a key, a timeout, a
    503 or a 429 is retried here (a few times, waiting as the relay asks); without one, a
    retry could publish twice, so nothing is retried.

    Raises RelayError when the relay refuses (any status but 200), OSError when it cannot
    be reached.
    """
    relay_url = relay_url or os.environ.get("RELAY_URL", "http://localhost:8080")
    request = {"room": room, "text": text}
    if sender is not None:
        request["from"] = sender
    if idempotency_key is not None:
        request["idempotency_key"] = idempotency_key
    # Unescaped UTF-8: json.dumps's default (\u00e9 for é) makes the body up to six times the
    # text, and the relay limits the body, not just the text.
    body = json.dumps(request, ensure_ascii=False).encode("utf-8")

    attempts = 1 if idempotency_key is None else 3
    for attempt in range(1, attempts + 1):
        http_request = urllib.request.Request(
            relay_url.rstrip("/") + "/api/publish",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        try:
            with urllib.request.urlopen(http_request, timeout=15) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            # Any status but 2xx: the body is the relay's JSON error.
            answer = error.read()
            if error.code in (429, 503) and attempt < attempts:
                time.sleep(min(int(error.headers.get("Retry-After") or 1), 10))
                continue
            try:
                decoded = json.loads(answer)
                raise RelayError(error.code, decoded["code"], decoded["message"], decoded) from None
            except (ValueError, KeyError, TypeError):
                raise RelayError(error.code, "unexpected_answer", answer[:200]) from None
        except OSError:
            # Not reached, or no answer in time: safe to try again only with a key.
            if attempt == attempts:
                raise
            time.sleep(1)


def main(argv):
    if len(argv) not in (3, 4):
        print(
            "usage: publish.py ROOM TEXT [IDEMPOTENCY_KEY]\n"
            "  with RELAY_URL (default http://localhost:8080) and RELAY_API_KEY set",
            file=sys.stderr,
        )
        return 2
    key = os.environ.get("RELAY_API_KEY")
    if not key:
        print("set RELAY_API_KEY to one of the relay's --api-key values", file=sys.stderr)
        return 2
    try:
        answer = relay_publish(argv[1], argv[2], key, argv[3] if len(argv) == 4 else None)
    except RelayError as error:
        # E.g. "relay answered 409 idempotency_conflict: ..." for a key reused for another text.
        print(error, file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot reach the relay: {error}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
