#!/usr/bin/env bash
# Push an event into a room of the relay from a shell script, with curl, through the relay's
# HTTP API (docs/openapi.yaml).
#
#   export RELAY_URL=http://localhost:8080 RELAY_API_KEY=your-key
#   examples/curl/publish.sh lobby 'hello'
#   examples/curl/publish.sh lobby '{"order":42,"status":"shipped"}' order-42-shipped
#
# Prints the relay's answer, {"room","epoch","offset","ts","duplicate"}, once the message is
# stored. On a refusal, prints the relay's JSON error to stderr and exits 1.
#
# With an idempotency key (mint it from the business event, like order-42-shipped, not from
# the attempt), curl retries timeouts, 429 and 503 as the relay's Retry-After says: the
# same key is published once however often it is sent. Without one, nothing is retried,
# since a retry could publish twice.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 ROOM TEXT [IDEMPOTENCY_KEY]" >&2
  echo "  with RELAY_URL (default http://localhost:8080) and RELAY_API_KEY set" >&2
  exit 2
fi
: "${RELAY_API_KEY:?set RELAY_API_KEY to one of the --api-key values the relay was started with}"
relay_url=${RELAY_URL:-http://localhost:8080}

# json_string TEXT: TEXT as a JSON string literal. Quotes, backslashes and control
# characters are escaped; everything else, UTF-8 included, goes as is (so no jq is needed).
json_string() {
  local s=$1 code char
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  for code in {1..8} 11 12 {14..31} 127; do
    printf -v char "\\x$(printf %02x "$code")"
    s=${s//"$char"/$(printf '\\u%04x' "$code")}
  done
  printf '"%s"' "$s"
}

body="{\"room\":$(json_string "$1"),\"text\":$(json_string "$2")"
retry=()
if [ $# -eq 3 ]; then
  body+=",\"idempotency_key\":$(json_string "$3")"
  retry=(--retry 3 --retry-max-time 30)
fi
body+="}"

answer=$(mktemp)
trap 'rm -f "$answer"' EXIT
# The key goes in a header read from stdin ("@-"), so it does not show in `ps`; the body
# goes from a variable, so no quoting survives to the shell.
status=$(printf 'Authorization: Bearer %s\n' "$RELAY_API_KEY" |
  curl --silent --show-error --max-time 15 "${retry[@]}" \
    --header @- --header 'Content-Type: application/json' \
    --data-binary "$body" --output "$answer" --write-out '%{http_code}' \
    "$relay_url/api/publish") || {
  echo "cannot reach the relay at $relay_url" >&2
  exit 1
}
if [ "$status" = 200 ]; then
  cat "$answer"
  echo
else
  # e.g. 409 {"code":"idempotency_conflict","message":"..."}
  echo "relay answered $status $(cat "$answer")" >&2
  exit 1
fi
