<?php
// Mint a relay token for your logged-in user: the one function a PHP application needs to
// let its users into the relay's rooms as themselves. HS256 with the secret the relay was
// started with (--auth-hmac-secret); no library, PHP 7.4+ (hash_hmac and json_encode).
//
// From the command line (prints a token):
//
//   export RELAY_AUTH_HMAC_SECRET=the-relays-secret-of-at-least-32-bytes
//   php examples/php/token.php ada Ada 'support-*=read,write' 'news=read'
//
// In your application, serve it to the logged-in user's page, e.g. at /chat-token:
//
//   header('Content-Type: application/json');
//   echo json_encode(['token' => relay_token($user->id, $user->name, ['support-' . $user->id => ['read', 'write']], 3600, $secret)]);

declare(strict_types=1);

/**
 * A token saying that $userId (shown as $name) may, in each room pattern of $rooms ("news",
 * or a prefix and "*": "support-*"), do what its list says: "read" (join, receive) and
 * "write" (send). Valid for $ttlSeconds. Give it only to the user it names: whoever holds
 * it is that user until it expires.
 *
 * @param array<string, list<string>> $rooms
 */
function relay_token(string $userId, string $name, array $rooms, int $ttlSeconds, string $secret): string
{
    $now = time();
    $header = ['alg' => 'HS256', 'typ' => 'JWT'];
    $claims = [
        'sub' => $userId,
        'name' => $name,
        'iat' => $now,
        'exp' => $now + $ttlSeconds,
        // An empty PHP array would encode as [], not {}.
        'rooms' => (object) $rooms,
    ];
    $encode = fn (array $part): string => base64url(json_encode($part, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR));
    $signing_input = $encode($header) . '.' . $encode($claims);
    return $signing_input . '.' . base64url(hash_hmac('sha256', $signing_input, $secret, true));
}

function base64url(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

if (PHP_SAPI === 'cli' && realpath($_SERVER['SCRIPT_FILENAME'] ?? '') === __FILE__) {
    [$script, $user, $name] = $argv + [null, null, null];
    if ($user === null || $name === null) {
        fwrite(STDERR, "usage: php token.php USER NAME [PATTERN=read,write ...]\n");
        exit(2);
    }
    $rooms = [];
    foreach (array_slice($argv, 3) as $grant) {
        [$pattern, $permissions] = explode('=', $grant, 2) + [null, ''];
        $rooms[$pattern] = array_values(array_filter(explode(',', $permissions)));
    }
    $secret = getenv('RELAY_AUTH_HMAC_SECRET') ?: '';
    if (strlen($secret) < 32) {
        fwrite(STDERR, "set RELAY_AUTH_HMAC_SECRET to the relay's secret (at least 32 bytes)\n");
        exit(2);
    }
    echo relay_token($user, $name, $rooms, 3600, $secret), "\n";
}
