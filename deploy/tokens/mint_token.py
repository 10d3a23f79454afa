#!/usr/bin/env python3
"""mint_token.py -- make a holdfast token in Python with the standard library.

In your application: call holdfast_token() when you render the page that
subscribes (PyJWT does the same: jwt.encode(claims, secret, "HS256")).
From a shell:  HOLDFAST_TOKEN_SECRET=... python3 mint_token.py CHANNELS TTL [--publish]
(CHANNELS: patterns separated by commas, such as "private.team-7,alerts.*").
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def holdfast_token(secret, patterns, ttl, publish=False):
    """A token granting subscribe (and, if publish, publish) on patterns for ttl seconds."""
    grant = {'subscribe': list(patterns)}
    if publish:
        grant['publish'] = list(patterns)
    now = int(time.time())
    header = _b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())
    claims = _b64url(json.dumps({'iat': now, 'exp': now + ttl, 'holdfast': grant}).encode())
    signing = (header + '.' + claims).encode('ascii')
    signature = _b64url(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    return header + '.' + claims + '.' + signature


if __name__ == '__main__':
    secret = os.environ.get('HOLDFAST_TOKEN_SECRET', '')
    if len(secret) < 32 or len(sys.argv) < 3 or not sys.argv[2].isdigit():
        sys.exit('usage: HOLDFAST_TOKEN_SECRET=... python3 mint_token.py CHANNELS TTL [--publish]')
    print(holdfast_token(secret, sys.argv[1].split(','), int(sys.argv[2]),
                         sys.argv[3:] == ['--publish']))
