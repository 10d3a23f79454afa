"""Access rules, tokens and abuse limits, against a real `holdfast serve`.

Every refusal holdfast can give for access or abuse has a test here with
its status and body (the closing note of the security issue lists them).
Tokens are made in this file with Python's own hmac and base64, so that a
token holdfast accepts is one any standard library would make; the bad
ones are made the same way with one thing wrong.
"""
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import time
import unittest

import hfutil
from hfutil import HoldfastServer, collect, close_all, park_many, publish, request

SECRET = 'test-secret-0123456789-abcdefghijklmnop'    # >= 32 bytes
SECRET2 = 'second-secret-for-rotation-9876543210-xyz'
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def jwt(claims, secret=SECRET, alg='HS256', header=None):
    """A compact JWS: header.payload.signature (HMAC)."""
    h = header if header is not None else {'alg': alg, 'typ': 'JWT'}
    signing = b64(json.dumps(h)) + '.' + b64(json.dumps(claims))
    digest = {'HS256': hashlib.sha256, 'HS384': hashlib.sha384,
              'HS512': hashlib.sha512}.get(alg, hashlib.sha256)
    sig = hmac.new(secret.encode(), signing.encode(), digest).digest()
    return signing + '.' + b64(sig)


def grant(subscribe=None, publish=None, ttl=60, **extra):
    c = {'exp': int(time.time()) + ttl, 'holdfast': {}}
    if subscribe is not None:
        c['holdfast']['subscribe'] = subscribe
    if publish is not None:
        c['holdfast']['publish'] = publish
    c.update(extra)
    return c


def body_json(b):
    return json.loads(b) if b else None


class SecurityTest(unittest.TestCase):

    def setUp(self):
        self.tmp = hfutil.make_tmpdir('hf-sec-')
        self.addCleanup(hfutil.remove_tmpdir, self.tmp)
        self.db = os.path.join(self.tmp, 'hf.db')

    def serve(self, config='', workers=1, env=None, threads=None):
        srv = HoldfastServer(self.tmp, workers=workers, config=config, db=self.db,
                             env=env, threads=threads, closed=True)
        self.addCleanup(srv.kill)
        srv.start()
        self.srv = srv
        return srv

    def get(self, path, query='', headers=None, extra=None, timeout=10):
        st, h, b = request(self.srv.addr, 'GET', path, query, headers, timeout=timeout,
                           extra=extra)
        return st, h, body_json(b) if h.get('content-type', '').startswith(
            'application/json') else b

    def pub(self, channel, data='x', headers=None, extra=None, ctype='text/plain'):
        h = {'Content-Type': ctype}
        h.update(headers or {})
        st, hd, b = request(self.srv.addr, 'POST', '/pub/' + channel, '', h, data,
                            extra=extra)
        return st, hd, body_json(b) if b else None

    def assert_refused(self, answer, status, error, secret=SECRET):
        st, h, b = answer
        self.assertEqual(st, status, b)
        self.assertIsInstance(b, dict, b)
        self.assertEqual(b['error'], error, b)
        self.assertTrue(b['detail'], b)
        text = json.dumps(b) + json.dumps(h)
        self.assertNotIn(secret, text)  # nothing about the key
        return b

    # ---- publishing is closed by default ------------------------------------

    def test_default_refuses_publishes_and_says_how_to_open(self):
        self.serve('')
        b = self.assert_refused(self.pub('news'), 403, 'publishing_closed')
        self.assertIn('publish_key', b['detail'])
        self.assertIn('publish = anyone', b['detail'])
        self.assertIn('publishing is closed', self.srv.read_log())
        st, _, m = self.get('/sub/news', 'timeout=0')  # subscribing is open
        self.assertEqual(st, 200)
        self.assertEqual(m['messages'], [])

    def test_publish_key_missing_wrong_right(self):
        self.serve('publish_key = k-one\npublish_key = k-two\n')
        self.assert_refused(self.pub('news'), 401, 'unauthorized', 'k-one')
        self.assert_refused(self.pub('news', headers={'Authorization': 'Bearer k-on'}), 403,
                            'forbidden', 'k-one')
        self.assert_refused(self.pub('news', headers={'Authorization': 'Bearer k-one2'}), 403,
                            'forbidden', 'k-one')
        for k in ('k-one', 'k-two'):
            st, _, b = self.pub('news', headers={'Authorization': 'Bearer ' + k})
            self.assertEqual(st, 201, b)

    def test_publish_anyone_from_the_environment(self):
        self.serve('', env={'HOLDFAST_PUBLISH': 'anyone'})
        st, _, b = self.pub('news')
        self.assertEqual(st, 201, b)
        self.assertIn('publish = anyone', self.srv.read_log())

    def test_section_opens_only_its_channels(self):
        self.serve('[channel chat.*]\npublish = anyone\n')
        self.assertEqual(self.pub('chat.lobby')[0], 201)
        self.assert_refused(self.pub('news'), 403, 'publishing_closed')
        self.assert_refused(self.pub('chatter'), 403, 'publishing_closed')

    # ---- subscribe tokens ---------------------------------------------------

    PRIVATE = ('token_secret = %s\n[channel private.*]\nsubscribe = token\n'
               '[channel *]\npublish = anyone\n' % SECRET)

    def sub_with(self, token, channels='private.a', query='timeout=0'):
        return self.get('/sub/' + channels, query,
                        headers={'Authorization': 'Bearer ' + token} if token else None)

    def test_token_rejections(self):
        self.serve(self.PRIVATE)
        now = int(time.time())
        cases = [
            (None, 'token_missing'),
            ('not-a-token', 'token_malformed'),
            ('a.b', 'token_malformed'),
            ('a.b.c.d', 'token_malformed'),
            (jwt(grant(['private.*']), header={'alg': 'none', 'typ': 'JWT'})
             .rsplit('.', 1)[0] + '.', 'token_algorithm'),
            (jwt(grant(['private.*']), header={'alg': 'none'}), 'token_algorithm'),
            (jwt(grant(['private.*']), alg='HS384'), 'token_algorithm'),
            (jwt(grant(['private.*']), header={'alg': 'RS256', 'typ': 'JWT'}),
             'token_algorithm'),
            (jwt(grant(['private.*']), secret='wrong-secret-wrong-secret-wrong-secret'),
             'token_signature'),
            (jwt(grant(['private.*'], ttl=-10)), 'token_expired'),
            (jwt(grant(['private.*'], nbf=now + 30)), 'token_not_yet_valid'),
            (jwt(grant(['private.*'], iat=now + 30)), 'token_not_yet_valid'),
            (jwt({'holdfast': {'subscribe': ['private.*']}}), 'token_malformed'),  # no exp
            (jwt(grant('private.*')), 'token_malformed'),  # not a list
            ('x' * 5000, 'token_malformed'),
        ]
        good = jwt(grant(['private.*']))
        cases.append((good[:-2] + ('AA' if good[-2:] != 'AA' else 'BA'), 'token_signature'))
        for tok, error in cases:
            with self.subTest(error=error, token=(tok or '')[:40]):
                self.assert_refused(self.sub_with(tok), 401, error)
        st, _, b = self.sub_with(good)
        self.assertEqual(st, 200, b)

    def test_token_grants_exactly_its_channels_and_whole_subscribes(self):
        self.serve(self.PRIVATE)
        tok = jwt(grant(['private.a', 'private.team-*']))
        for ch in ('private.a', 'private.team-x', 'private.a,public', 'public'):
            st, _, b = self.sub_with(tok, ch)
            self.assertEqual(st, 200, (ch, b))
        for ch in ('private.b', 'private.a,private.b', 'private.team-x,private.ab'):
            b = self.assert_refused(self.sub_with(tok, ch), 403, 'not_granted')
            self.assertIn('subscrib', b['detail'])
        # A token whose grant is only for publishing does not subscribe.
        self.assert_refused(self.sub_with(jwt(grant(publish=['private.*']))), 403,
                            'not_granted')
        # Subscribing to a public channel needs no token at all.
        self.assertEqual(self.sub_with(None, 'public')[0], 200)

    def test_token_from_query_and_cookie(self):
        self.serve('token_cookie = hf_token\n' + self.PRIVATE)
        tok = jwt(grant(['private.*']))
        st, _, b = self.get('/sub/private.a', 'timeout=0&token=' + tok)
        self.assertEqual(st, 200, b)
        st, _, b = self.get('/sub/private.a', 'timeout=0',
                            headers={'Cookie': 'other=1; hf_token=%s; x=y' % tok})
        self.assertEqual(st, 200, b)
        self.assert_refused(self.get('/sub/private.a', 'timeout=0',
                                     headers={'Cookie': 'token=%s' % tok}), 401,
                            'token_missing')
        bad = tok[:-2] + ('AA' if tok[-2:] != 'AA' else 'BA')
        self.assert_refused(self.get('/sub/private.a', 'timeout=0&token=' + bad), 401,
                            'token_signature')

    def test_expiry_to_the_second_with_leeway(self):
        now = int(time.time())
        self.serve('token_leeway = 4\n' + self.PRIVATE)
        # exp one second ago: inside the 4 s leeway (and still if a second ticks).
        st, _, b = self.sub_with(jwt(grant(['private.*'], exp=now - 1)))
        self.assertEqual(st, 200, b)
        self.assert_refused(self.sub_with(jwt(grant(['private.*'], exp=now - 6))), 401,
                            'token_expired')
        st, _, b = self.sub_with(jwt(grant(['private.*'], nbf=now + 2)))
        self.assertEqual(st, 200, b)

    def test_expiry_without_leeway(self):
        self.serve(self.PRIVATE)
        now = int(time.time())
        self.assert_refused(self.sub_with(jwt(grant(['private.*'], exp=now - 1))), 401,
                            'token_expired')
        tok = jwt(grant(['private.*'], exp=now + 2))
        self.assertEqual(self.sub_with(tok)[0], 200)
        hfutil.wait_for(lambda: time.time() >= now + 3.05, 5)
        self.assert_refused(self.sub_with(tok), 401, 'token_expired')

    def test_rotated_secrets(self):
        self.serve('token_secret = %s\ntoken_secret = %s\n[channel private.*]\n'
                   'subscribe = token\n' % (SECRET2, SECRET))
        for s in (SECRET, SECRET2):
            st, _, b = self.sub_with(jwt(grant(['private.*']), secret=s))
            self.assertEqual(st, 200, b)
        self.assert_refused(
            self.sub_with(jwt(grant(['private.*']), secret='third-secret-not-configured-xxxxx')),
            401, 'token_signature', SECRET2)

    def test_secret_from_the_environment_and_algorithms(self):
        self.serve('token_algorithms = HS512\n[channel private.*]\nsubscribe = token\n',
                   env={'HOLDFAST_TOKEN_SECRET': SECRET, 'HOLDFAST_PUBLISH': 'anyone'})
        self.assert_refused(self.sub_with(jwt(grant(['private.*']))), 401, 'token_algorithm')
        st, _, b = self.sub_with(jwt(grant(['private.*']), alg='HS512'))
        self.assertEqual(st, 200, b)

    def test_publish_token(self):
        self.serve('token_secret = %s\npublish_key = backend-key\n[channel room.*]\n'
                   'publish = token\nsubscribe = token\n' % SECRET)
        auth = lambda t: {'Authorization': 'Bearer ' + t}
        self.assert_refused(self.pub('room.1'), 401, 'token_missing')
        self.assert_refused(self.pub('room.1', headers=auth(jwt(grant(['room.*'])))), 403,
                            'not_granted')
        self.assert_refused(self.pub('room.1', headers=auth(jwt(grant(publish=['room.2'])))),
                            403, 'not_granted')
        self.assert_refused(self.pub('room.1', headers=auth(jwt(grant(publish=['room.*']),
                                                                secret='x' * 40))),
                            401, 'token_signature')
        st, _, b = self.pub('room.1', headers=auth(jwt(grant(publish=['room.*']))))
        self.assertEqual(st, 201, b)
        # The publish key opens token channels too (the application's own key).
        st, _, b = self.pub('room.1', headers=auth('backend-key'))
        self.assertEqual(st, 201, b)
        st, _, b = self.sub_with('backend-key', 'room.1', 'since=0&timeout=0')
        self.assertEqual(len(b['messages']), 2, b)

    def test_cli_token(self):
        conf = os.path.join(self.tmp, 'mint.conf')
        hfutil.write_config(conf, 'token_secret = %s\n' % SECRET)
        self.serve(self.PRIVATE)
        r = subprocess.run([hfutil.holdfast_bin(), 'token', '--config', conf, '--channel',
                            'private.a,private.b*', '--ttl', '60', '--publish'],
                           capture_output=True, text=True, timeout=10,
                           env=hfutil.clean_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        tok = r.stdout.strip()
        self.assertEqual(tok.count('.'), 2)
        self.assertEqual(self.sub_with(tok, 'private.a,private.bee')[0], 200)
        self.assert_refused(self.sub_with(tok, 'private.c'), 403, 'not_granted')
        r = subprocess.run([hfutil.holdfast_bin(), 'token', '--channel', 'x', '--ttl', '60'],
                           capture_output=True, text=True, timeout=10,
                           env=hfutil.clean_env(HOLDFAST_CONFIG=os.devnull))
        self.assertEqual(r.returncode, 1)
        self.assertIn('token_secret', r.stderr)

    def test_minting_examples_php_and_python(self):
        """deploy/tokens: the PHP (hash_hmac) and Python (hmac) examples."""
        self.serve(self.PRIVATE)
        env = hfutil.clean_env(HOLDFAST_TOKEN_SECRET=SECRET)
        for cmd in (['php', os.path.join(TOP, 'deploy', 'tokens', 'mint-token.php')],
                    ['python3', os.path.join(TOP, 'deploy', 'tokens', 'mint_token.py')]):
            with self.subTest(cmd=cmd[0]):
                r = subprocess.run(cmd + ['private.a', '60'], capture_output=True, text=True,
                                   timeout=20, env=env)
                self.assertEqual(r.returncode, 0, r.stderr)
                tok = r.stdout.strip()
                st, _, b = self.sub_with(tok)
                self.assertEqual(st, 200, b)
                self.assert_refused(self.sub_with(tok, 'private.b'), 403, 'not_granted')

    def test_config_rules(self):
        """A token rule without a secret, a short secret, credentials with *."""
        for text, words in (('[channel p.*]\nsubscribe = token\n', 'token_secret'),
                            ('token_secret = short\n', 'at least 32'),
                            ('cors_origin = *\ncors_credentials = on\n', 'cors_credentials'),
                            ('[channel p.*]\nsubscribe = key\n', "'anyone' or 'token'"),
                            ('[channel p.*]\npublish_rate = fast\n', 'publish_rate')):
            with self.subTest(text=text):
                conf = os.path.join(self.tmp, 'bad.conf')
                hfutil.write_config(conf, text, closed=True)
                r = subprocess.run([hfutil.holdfast_bin(), 'serve', '--config', conf,
                                    '--listen', 'unix:' + os.path.join(self.tmp, 'x.sock'),
                                    '--db', self.db], capture_output=True, text=True,
                                   timeout=10, env=hfutil.clean_env())
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(words, r.stderr)

    # ---- abuse limits -------------------------------------------------------

    def test_parked_per_client_across_workers(self):
        self.serve('publish = anyone\nmax_parked_per_client = 3\n', workers=2)
        a = {'REMOTE_ADDR': '203.0.113.7'}
        conns = park_many(self.srv.addr, 3, '/sub/news', 'timeout=20', extra=a, spread=True)
        self.addCleanup(close_all, conns)
        hfutil.wait_for(lambda: hfutil.stats(self.srv.addr)['parked'] >= 3, 10,
                        what='3 parked')
        st, h, b = self.get('/sub/news', 'timeout=20', extra=a)
        self.assertEqual(st, 429, b)
        self.assertEqual(b['error'], 'too_many_subscribers')
        self.assertGreaterEqual(int(h['retry-after']), 1)
        # Another client is still served (it parks; a publish answers it).
        other = park_many(self.srv.addr, 1, '/sub/news', 'timeout=20',
                          extra={'REMOTE_ADDR': '203.0.113.8'})
        self.addCleanup(close_all, other)
        hfutil.wait_for(lambda: hfutil.stats(self.srv.addr)['parked'] >= 4, 10,
                        what='the other client parked')
        self.assertEqual(self.pub('news')[0], 201)
        answers = collect(conns + other, 10)
        self.assertEqual([x[0] if x else None for x in answers], [200] * 4)
        # Once answered, the first client may park again.
        again = park_many(self.srv.addr, 1, '/sub/news', 'timeout=1', extra=a)
        self.assertEqual(collect(again, 10)[0][0], 200)
        self.assertGreaterEqual(hfutil.stats(self.srv.addr)['refused'], 1)

    def test_client_header_behind_a_proxy(self):
        self.serve('publish = anyone\nmax_parked_per_client = 1\nclient_header = X-Real-IP\n')
        same = {'REMOTE_ADDR': '127.0.0.1'}
        c1 = park_many(self.srv.addr, 1, '/sub/news', 'timeout=20',
                       headers={'X-Real-IP': '198.51.100.1'}, extra=same)
        self.addCleanup(close_all, c1)
        hfutil.wait_for(lambda: hfutil.stats(self.srv.addr)['parked'] >= 1, 10)
        st, _, b = self.get('/sub/news', 'timeout=20', headers={'X-Real-IP': '198.51.100.1'},
                            extra=same)
        self.assertEqual(st, 429, b)
        c2 = park_many(self.srv.addr, 1, '/sub/news', 'timeout=20',
                       headers={'X-Real-IP': '198.51.100.2'}, extra=same)
        self.addCleanup(close_all, c2)
        hfutil.wait_for(lambda: hfutil.stats(self.srv.addr)['parked'] >= 2, 10,
                        what='a second address behind the same proxy')

    def test_publish_rate_per_client_and_per_key(self):
        self.serve('publish_key = rate-key\npublish_rate = 1000\n[channel chat.*]\n'
                   'publish = anyone\npublish_rate = 30/m\npublish_burst = 3\n')
        a = {'REMOTE_ADDR': '203.0.113.20'}
        for i in range(3):
            self.assertEqual(self.pub('chat.x', extra=a)[0], 201, i)
        st, h, b = self.pub('chat.x', extra=a)
        self.assertEqual(st, 429, b)
        self.assertEqual(b['error'], 'rate_limited')
        self.assertGreaterEqual(int(h['retry-after']), 1)
        self.assertEqual(self.pub('chat.y', extra={'REMOTE_ADDR': '203.0.113.21'})[0], 201)
        # The key has its own bucket, and the global rule's rate.
        for i in range(5):
            st, _, b = self.pub('news', headers={'Authorization': 'Bearer rate-key'}, extra=a)
            self.assertEqual(st, 201, (i, b))

    def test_section_max_body(self):
        self.serve('publish = anyone\n[channel chat.*]\nmax_body = 100\n')
        b = self.assert_refused(self.pub('chat.x', 'y' * 101), 413, 'body_too_large')
        self.assertIn('100', b['detail'])
        self.assertEqual(self.pub('chat.x', 'y' * 100)[0], 201)
        self.assertEqual(self.pub('news', 'y' * 1000)[0], 201)

    # ---- what answers carry -------------------------------------------------

    def test_nosniff_on_every_answer(self):
        self.serve('publish = anyone\n')
        answers = [request(self.srv.addr, 'GET', p, q) for p, q in
                   (('/health', ''), ('/stats', ''), ('/metrics', ''), ('/sub/news', 'timeout=0'),
                    ('/sub/bad!', ''), ('/nowhere', ''), ('/sub/news', 'format=raw&timeout=0'))]
        answers.append(request(self.srv.addr, 'POST', '/pub/news', '',
                               {'Content-Type': 'text/plain'}, 'x'))
        answers.append(request(self.srv.addr, 'OPTIONS', '/pub/news'))
        for st, h, _ in answers:
            self.assertEqual(h.get('x-content-type-options'), 'nosniff', (st, h))

    def test_raw_answers_cannot_become_pages(self):
        self.serve('publish = anyone\n')
        html = '<script>alert(document.cookie)</script>'
        for ctype in ('text/html', 'image/svg+xml', 'text/html; charset=utf-8'):
            self.assertEqual(self.pub('x', html, ctype=ctype)[0], 201)
        self.assertEqual(self.pub('x', 'plain', ctype='text/plain; charset=utf-8')[0], 201)
        for since, ctype in ((0, 'text/html'), (1, 'image/svg+xml'),
                             (2, 'text/html; charset=utf-8')):
            st, h, b = request(self.srv.addr, 'GET', '/sub/x', 'format=raw&since=%d' % since)
            self.assertEqual(st, 200)
            self.assertEqual(h['content-type'], 'application/octet-stream')
            self.assertEqual(h['content-disposition'], 'attachment')
            self.assertEqual(h['content-security-policy'], 'sandbox')
            self.assertEqual(h['holdfast-type'], ctype)
            self.assertEqual(b.decode(), html)
        st, h, b = request(self.srv.addr, 'GET', '/sub/x', 'format=raw&since=3')
        self.assertEqual(h['content-type'], 'text/plain; charset=utf-8')
        self.assertEqual(h['content-security-policy'], 'sandbox')
        self.assertNotIn('content-disposition', h)

    def test_raw_types_allow_list(self):
        self.serve('publish = anyone\nraw_types = text/html, text/plain\n')
        self.pub('x', '<b>hi</b>', ctype='text/html')
        self.pub('x', '{}', ctype='application/json')
        st, h, _ = request(self.srv.addr, 'GET', '/sub/x', 'format=raw&since=0')
        self.assertEqual(h['content-type'], 'text/html')
        self.assertEqual(h['content-security-policy'], 'sandbox')
        st, h, _ = request(self.srv.addr, 'GET', '/sub/x', 'format=raw&since=1')
        self.assertEqual(h['content-type'], 'application/octet-stream')  # not listed now

    def test_outbox_type_cannot_inject_headers(self):
        """The SQL outbox (the publish view) refuses a type with CR LF; a row
        written straight into the message table is served without it."""
        self.serve('publish = anyone\n')
        self.assertEqual(self.pub('x', 'first')[0], 201)
        con = sqlite3.connect(self.db, timeout=5)
        self.addCleanup(con.close)
        evil = 'text/plain\r\nSet-Cookie: a=b'
        with self.assertRaises(sqlite3.DatabaseError):
            with con:
                con.execute("INSERT INTO publish(channel, type, body) VALUES ('x', ?, 'evil')",
                            (evil,))
        with con:
            con.execute("INSERT INTO message(channel, time_ms, type, body) SELECT channel, "
                        "time_ms, ?, 'evil' FROM message WHERE id = 1", (evil,))
        st, h, b = request(self.srv.addr, 'GET', '/sub/x', 'format=raw&since=1')
        self.assertEqual(st, 200)
        self.assertEqual(b, b'evil')
        self.assertNotIn('set-cookie', h)
        self.assertNotIn('holdfast-type', h)
        self.assertEqual(h['content-type'], 'application/octet-stream')

    def test_cors_exact_origins_and_credentials(self):
        self.serve('publish = anyone\ncors_origin = https://app.example\n'
                   'cors_credentials = on\n')
        st, h, _ = request(self.srv.addr, 'GET', '/sub/news', 'timeout=0',
                           {'Origin': 'https://app.example'})
        self.assertEqual(h.get('access-control-allow-origin'), 'https://app.example')
        self.assertEqual(h.get('access-control-allow-credentials'), 'true')
        for origin in ('https://app.example.evil', 'https://evil.example', 'null'):
            st, h, _ = request(self.srv.addr, 'GET', '/sub/news', 'timeout=0',
                               {'Origin': origin})
            self.assertNotIn('access-control-allow-origin', h, origin)
            self.assertNotIn('access-control-allow-credentials', h, origin)

    def test_cors_wildcard_without_credentials(self):
        self.serve('publish = anyone\ncors_origin = *\n')
        st, h, _ = request(self.srv.addr, 'GET', '/sub/news', 'timeout=0',
                           {'Origin': 'https://any.example'})
        self.assertEqual(h.get('access-control-allow-origin'), '*')
        self.assertNotIn('access-control-allow-credentials', h)


if __name__ == '__main__':
    unittest.main()
