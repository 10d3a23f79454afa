#!/usr/bin/env python3
"""make_fcgi_seeds.py -- write the seed corpus of fuzz_fcgi.c into
tests/fuzz/seeds/fcgi/: real FastCGI requests as a web server sends them,
encoded by tests/integration/hfutil.py (records padded to 8 bytes), each
behind fuzz_fcgi's 8-byte prefix (limits, then the piece sizes).

    python3 tests/fuzz/make_fcgi_seeds.py      # rewrites the seeds
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
import hfutil as h  # noqa: E402

OUT = os.path.join(HERE, 'seeds', 'fcgi')


def prefix(max_params=0, max_body=0, sizes=(0, 0, 0, 0, 0, 0)):
    """fuzz_fcgi's selectors (index into its tables) and piece sizes."""
    return bytes([max_params, max_body]) + bytes(sizes)


def get_values(*names):
    return h.fcgi_record(9, 0, b''.join(h.fcgi_nv(n, '') for n in names))


SEEDS = {
    # nginx-like subscribe, whole
    'get-sub': prefix() + h.fcgi_encode_request(
        'GET', '/sub/news', 'since=0&timeout=25', {'Accept': 'application/json'},
        script_name='/lp', extra={'CONTENT_LENGTH': '', 'CONTENT_TYPE': ''}),
    # publish with a body, in pieces of 1, 7, 100, 3, 512 and 13 bytes
    'post-pub': prefix(0, 0, (1, 7, 100, 3, 128, 13)) + h.fcgi_encode_request(
        'POST', '/pub/news', '', {'Content-Type': 'application/json',
                                  'Authorization': 'Bearer k'},
        b'{"headline":"hi","n":[1,2,3]}', reqid=258, script_name='/lp'),
    # the body over a small max_body (10 bytes), byte by byte
    'post-over': prefix(0, 3, (1, 1, 1, 1, 1, 1)) + h.fcgi_encode_request(
        'POST', '/pub/x', '', {'Content-Type': 'text/plain'}, b'a' * 300),
    # params over a small max_params (100 bytes), with a 4-byte length
    'params-over': prefix(2, 0) + h.fcgi_encode_request(
        'GET', '/sub/x', '', {'Cookie': 'c' * 200}),
    # management records first, then the request (lighttpd and Apache
    # never send them; other FastCGI clients do)
    'get-values': prefix(0, 0, (9, 0, 0, 0, 0, 0)) +
    get_values('FCGI_MAX_CONNS', 'FCGI_MAX_REQS', 'FCGI_MPXS_CONNS', 'OTHER') +
    h.fcgi_record(42, 0, b'\0' * 8) + h.fcgi_encode_request('GET', '/health'),
    # keep-conn: two requests on one connection (what is after DONE is left)
    'keep-conn': prefix() + h.fcgi_encode_request('GET', '/stats', keep_conn=True) +
    h.fcgi_encode_request('GET', '/health', reqid=2, keep_conn=True),
    # a second BEGIN for another id, then an ABORT of ours
    'mpx-abort': prefix(0, 0, (16, 0, 0, 0, 0, 0)) +
    h.fcgi_record(1, 1, struct.pack('>HB5x', 1, 0)) +
    h.fcgi_record(1, 2, struct.pack('>HB5x', 1, 0)) +
    h.fcgi_stream(4, 1, h.fcgi_nv('REQUEST_METHOD', 'GET')) +
    h.fcgi_record(2, 1),
    # explicit odd padding (not to 8) and an empty-named pair
    'padding': prefix(0, 0, (3, 5, 0, 0, 0, 0)) +
    struct.pack('>BBHHBB', 1, 1, 1, 8, 255, 0) + struct.pack('>HB5x', 1, 0) + b'\xaa' * 255 +
    struct.pack('>BBHHBB', 1, 4, 1, 12, 3, 0) + h.fcgi_nv('', 'x') + h.fcgi_nv('A=B', 'xxxx') +
    b'pad' + h.fcgi_record(4, 1) + h.fcgi_stream(5, 1, b'body'),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), 'wb') as f:
            f.write(data)
    print('%d seeds in %s' % (len(SEEDS), OUT))


if __name__ == '__main__':
    main()
