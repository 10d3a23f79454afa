<?php
// mint-token.php -- make a holdfast token in PHP, with nothing but hash_hmac.
//
// In your application: call holdfast_token() when you render the page that
// subscribes, and hand the token to holdfast.js (or put it in ?token=).
// From a shell:  HOLDFAST_TOKEN_SECRET=... php mint-token.php CHANNELS TTL [--publish]
// (CHANNELS: patterns separated by commas, such as "private.team-7,alerts.*").

function holdfast_b64url(string $bytes): string {
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

// A token granting subscribe (and, if $publish, publish) on $patterns for $ttl seconds.
function holdfast_token(string $secret, array $patterns, int $ttl, bool $publish = false): string {
    $grant = ['subscribe' => array_values($patterns)];
    if ($publish) {
        $grant['publish'] = array_values($patterns);
    }
    $now = time();
    $header = holdfast_b64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT']));
    $claims = holdfast_b64url(json_encode(['iat' => $now, 'exp' => $now + $ttl,
                                           'holdfast' => $grant], JSON_UNESCAPED_SLASHES));
    $signature = holdfast_b64url(hash_hmac('sha256', "$header.$claims", $secret, true));
    return "$header.$claims.$signature";
}

if (PHP_SAPI === 'cli' && realpath($argv[0]) === __FILE__) {
    $secret = getenv('HOLDFAST_TOKEN_SECRET');
    if ($secret === false || strlen($secret) < 32 || $argc < 3 || !ctype_digit($argv[2])) {
        fwrite(STDERR, "usage: HOLDFAST_TOKEN_SECRET=... php mint-token.php CHANNELS TTL [--publish]\n");
        exit(2);
    }
    echo holdfast_token($secret, explode(',', $argv[1]), (int)$argv[2],
                        ($argv[3] ?? '') === '--publish'), "\n";
}
