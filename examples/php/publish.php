<?php
// Push an event from a PHP application to the browsers in a room of the relay, through
// the relay's HTTP API (docs/openapi.yaml). Needs PHP 8.0+ with the curl extension
// (Debian: apt install php-cli php-curl).
//
// From the command line:
//
//   export RELAY_URL=http://localhost:8080 RELAY_API_KEY=your-key
//   php examples/php/publish.php lobby 'hello'
//   php examples/php/publish.php lobby '{"order":42,"status":"shipped"}' order-42-shipped
//
// From your application: require this file and call relay_publish(). The command-line part
// at the bottom only runs when this file is the script PHP was started with.

declare(strict_types=1);

/** The relay refused a request: the HTTP status and the relay's JSON error. */
final class RelayError extends RuntimeException
{
    /** @param array<string, mixed> $body the whole JSON error, e.g. ['code' => ..., 'message' => ...] */
    public function __construct(
        public int $status,
        public string $errorCode,
        string $message,
        public array $body = [],
    ) {
        parent::__construct("relay answered $status $errorCode: $message");
    }
}

/**
 * Publishes $text into $room and returns the relay's answer, once the message is stored:
 * ['room' => ..., 'epoch' => ..., 'offset' => 17, 'ts' => ..., 'duplicate' => false].
 *
 * $idempotencyKey makes the call safe to repeat. Mint it from the business event, not from
 * the attempt: "order-42-shipped" is published once however often you send it, and a
 * repeat answers the original's offset with 'duplicate' => true. With a key, a timeout, a
 * 503 or a 429 is retried here (a few times, waiting as the relay asks); without one, a
 * retry could publish twice, so nothing is retried.
 *
 * @throws RelayError when the relay refuses (any status but 200), with its error code
 * @throws RuntimeException when the relay cannot be reached
 */
function relay_publish(
    string $room,
    string $text,
    string $key,
    ?string $idempotencyKey = null,
    ?string $relayUrl = null,
    ?string $from = null,
): array {
    $relayUrl ??= getenv('RELAY_URL') ?: 'http://localhost:8080';
    $request = ['room' => $room, 'text' => $text];
    if ($from !== null) {
        $request['from'] = $from;
    }
    if ($idempotencyKey !== null) {
        $request['idempotency_key'] = $idempotencyKey;
    }
    // Unescaped UTF-8: json_encode's default (\u00e9 for é) makes the body up to six times
    // the text, and the relay limits the body, not just the text.
    $body = json_encode($request, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);

    $attempts = $idempotencyKey === null ? 1 : 3;
    for ($attempt = 1; ; $attempt++) {
        $retryAfter = 1;
        $curl = curl_init(rtrim($relayUrl, '/') . '/api/publish');
        curl_setopt_array($curl, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPHEADER => ['Content-Type: application/json', "Authorization: Bearer $key"],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_CONNECTTIMEOUT => 5,
            CURLOPT_TIMEOUT => 15,
            CURLOPT_HEADERFUNCTION => function ($curl, string $line) use (&$retryAfter): int {
                if (stripos($line, 'Retry-After:') === 0) {
                    $retryAfter = (int) trim(substr($line, strlen('Retry-After:')));
                }
                return strlen($line);
            },
        ]);
        $answer = curl_exec($curl);
        $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        $curlError = curl_error($curl);
        unset($curl); // frees the handle (curl_close() does nothing since PHP 8)

        $retryable = $answer === false || $status === 503 || $status === 429;
        if ($retryable && $attempt < $attempts) {
            sleep(max(1, min($retryAfter, 10)));
            continue;
        }
        if ($answer === false) {
            throw new RuntimeException("cannot reach the relay at $relayUrl: $curlError");
        }
        $decoded = json_decode($answer, true);
        if ($status === 200 && is_array($decoded)) {
            return $decoded;
        }
        if (is_array($decoded) && isset($decoded['code'], $decoded['message'])) {
            throw new RelayError($status, $decoded['code'], $decoded['message'], $decoded);
        }
        throw new RelayError($status, 'unexpected_answer', substr((string) $answer, 0, 200));
    }
}

// The command line: php publish.php ROOM TEXT [IDEMPOTENCY_KEY]
if (PHP_SAPI === 'cli' && realpath($_SERVER['SCRIPT_FILENAME']) === __FILE__) {
    if ($argc < 3 || $argc > 4) {
        fwrite(STDERR, "usage: php publish.php ROOM TEXT [IDEMPOTENCY_KEY]\n"
            . "  with RELAY_URL (default http://localhost:8080) and RELAY_API_KEY set\n");
        exit(2);
    }
    $key = getenv('RELAY_API_KEY');
    if ($key === false || $key === '') {
        fwrite(STDERR, "set RELAY_API_KEY to one of the relay's --api-key values\n");
        exit(2);
    }
    try {
        $answer = relay_publish($argv[1], $argv[2], $key, $argv[3] ?? null);
        echo json_encode($answer, JSON_UNESCAPED_SLASHES), "\n";
    } catch (RelayError $error) {
        // E.g. "relay answered 409 idempotency_conflict: ..." for a key reused for another text.
        fwrite(STDERR, $error->getMessage() . "\n");
        exit(1);
    } catch (JsonException $error) {
        fwrite(STDERR, "the text cannot be sent as JSON (not UTF-8?): {$error->getMessage()}\n");
        exit(1);
    } catch (RuntimeException $error) {
        fwrite(STDERR, $error->getMessage() . "\n");
        exit(1);
    }
}
