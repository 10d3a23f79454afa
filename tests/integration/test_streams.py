"""Durable Streams on /v1/stream/NAME against a real `holdfast serve` (and the
CGI front): what is holdfast's own beyond the public conformance suite
(tests/conformance) -- the access rule on streams, the stream as the channel
NAME, live reads woken across worker processes and by a close,
streams_poll_timeout, streams = off, retention leaving streams alone, and
that a database with streams is still one the previous release opens.
A stream NAME is the channel NAME: both surfaces read and write one log.
"""
import json
import os
import sqlite3
import subprocess
import threading
import time
import unittest

import hfutil
from hfutil import HoldfastServer, request

KEY = 'k-streams-test-key'
OFF0 = '0000000000000000_'


def body_json(b):
    return json.loads(b) if b else None


class StreamsTest(unittest.TestCase):

    def setUp(self):
        self.tmp = hfutil.make_tmpdir('hf-ds-')
        self.addCleanup(hfutil.remove_tmpdir, self.tmp)
        self.db = os.path.join(self.tmp, 'hf.db')

    def serve(self, config='', workers=1, closed=True):
        srv = HoldfastServer(self.tmp, workers=workers, config=config, db=self.db,
                             closed=closed)
        self.addCleanup(srv.kill)
        srv.start()
        self.srv = srv
        return srv

    def ds(self, method, name, query='', headers=None, body=b'', key=KEY, timeout=10):
        h = dict(headers or {})
        if key:
            h['Authorization'] = 'Bearer ' + key
        return request(self.srv.addr, method, '/v1/stream/' + name, query, h, body,
                       timeout=timeout)

    def create(self, name, ctype='text/plain', body=b'', **kw):
        st, h, b = self.ds('PUT', name, headers={'Content-Type': ctype}, body=body, **kw)
        self.assertEqual(st, 201, b)
        return h['stream-next-offset']

    def append(self, name, data, ctype='text/plain', headers=None):
        h = {'Content-Type': ctype}
        h.update(headers or {})
        st, hd, b = self.ds('POST', name, headers=h, body=data)
        self.assertIn(st, (200, 204), b)
        return hd['stream-next-offset']

    # ---- the access rule -------------------------------------------------------

    def test_writes_need_the_publish_key_reads_follow_subscribe(self):
        self.serve('publish_key = %s\ntoken_secret = %s\n[channel private.*]\n'
                   'subscribe = token\n' % (KEY, 'x' * 40))
        st, _, b = self.ds('PUT', 'open', headers={'Content-Type': 'text/plain'}, key=None)
        self.assertEqual(st, 401, b)
        self.assertEqual(body_json(b)['error'], 'unauthorized')
        st, _, b = self.ds('PUT', 'open', headers={'Content-Type': 'text/plain'}, key='wrong')
        self.assertEqual(st, 403, b)
        self.create('open', body=b'hi')
        for method in ('POST', 'DELETE'):
            st, _, _ = self.ds(method, 'open', headers={'Content-Type': 'text/plain'},
                               body=b'x', key=None)
            self.assertEqual(st, 401, method)
        st, _, b = self.ds('GET', 'open', key=None)  # subscribing is open by default
        self.assertEqual((st, b), (200, b'hi'))
        self.create('private.a', body=b'secret')
        st, _, b = self.ds('GET', 'private.a', key=None)
        self.assertEqual(st, 401, b)
        st, _, b = self.ds('HEAD', 'private.a', key=None)
        self.assertEqual(st, 401, b)
        st, _, b = self.ds('GET', 'private.a')  # the publish key opens every channel
        self.assertEqual((st, b), (200, b'secret'))

    def test_streams_off_answers_404(self):
        self.serve('streams = off\n', closed=False)
        st, _, b = self.ds('PUT', 'x', headers={'Content-Type': 'text/plain'})
        self.assertEqual(st, 404, b)
        self.assertIn('streams = off', body_json(b)['detail'])

    # ---- one log, two surfaces --------------------------------------------------

    def test_one_log_two_views_across_workers_and_a_killed_worker(self):
        """A stream NAME is the channel NAME: an append through /v1/stream is a
        message to /sub readers, a publish on /pub is stream data to its
        readers -- live, across worker processes -- and both resume from
        their cursors after the worker holding them is killed."""
        self.serve('publish_key = %s\nstreams_poll_timeout = 20\n' % KEY, workers=2)
        auth = {'Authorization': 'Bearer ' + KEY}
        self.create('both', 'application/json', b'[{"n":1},{"n":2}]')
        st, _, b = request(self.srv.addr, 'GET', '/sub/both', 'since=0&timeout=0')
        got = body_json(b)
        self.assertEqual([m['data'] for m in got['messages']], [{'n': 1}, {'n': 2}])
        cursor, epoch = got['cursor'], got['epoch']
        self.assertEqual(cursor, got['messages'][-1]['id'])
        # the stream's offsets are the messages' ids
        tail = '%s%016d' % (OFF0, cursor)
        st, h, b = self.ds('GET', 'both', 'offset=%s%016d' % (OFF0, got['messages'][0]['id']))
        self.assertEqual((body_json(b), h['stream-next-offset']), ([{'n': 2}], tail))
        # live, both ways, with the readers parked on both workers
        polls = {}

        def sub_poll():
            polls['sub'] = request(self.srv.addr, 'GET', '/sub/both',
                                   'since=%d&epoch=%s&timeout=20' % (cursor, epoch), timeout=30)

        def ds_poll():
            polls['ds'] = self.ds('GET', 'both', 'offset=%s&live=long-poll' % tail, timeout=30)

        threads = [threading.Thread(target=f) for f in (sub_poll, ds_poll)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        st, pb = hfutil.publish(self.srv.addr, 'both', '{"n":3}',
                                headers=dict(auth, **{'Content-Type': 'application/json'}))
        self.assertEqual(st, 201, pb)
        for t in threads:
            t.join(30)
        self.assertEqual(body_json(polls['sub'][2])['messages'][0]['data'], {'n': 3})
        st, h, b = polls['ds']
        self.assertEqual((st, body_json(b)), (200, [{'n': 3}]))
        self.assertEqual(h['stream-next-offset'], '%s%016d' % (OFF0, pb['id']))
        # every worker killed: both resume where they stopped
        tail = h['stream-next-offset']
        cursor = pb['id']
        for pid in self.srv.worker_pids():
            os.kill(pid, 9)
        self.append('both', b'[{"n":4},{"n":5}]', 'application/json')  # a fresh worker takes it
        st, _, b = request(self.srv.addr, 'GET', '/sub/both',
                           'since=%d&epoch=%s&timeout=0' % (cursor, epoch))
        self.assertEqual([m['data'] for m in body_json(b)['messages']], [{'n': 4}, {'n': 5}])
        st, h, b = self.ds('GET', 'both', 'offset=' + tail)
        self.assertEqual(body_json(b), [{'n': 4}, {'n': 5}])
        # a publish obeys the stream's rules
        bad = [request(self.srv.addr, 'POST', '/pub/both', '',
                       dict(auth, **{'Content-Type': 'text/plain'}), b'not json'),
               request(self.srv.addr, 'POST', '/pub/both', '',
                       dict(auth, **{'Content-Type': 'application/json', 'Holdfast-Key': 'k'}),
                       b'{}')]
        self.assertEqual([x[0] for x in bad], [409, 409])
        st, _, _ = self.ds('POST', 'both', headers={'Stream-Closed': 'true'})
        self.assertEqual(st, 204)
        st, h, b = request(self.srv.addr, 'POST', '/pub/both', '',
                           dict(auth, **{'Content-Type': 'application/json'}), b'{}')
        self.assertEqual((st, body_json(b)['error'], h.get('stream-closed')),
                         (409, 'stream_closed', 'true'))
        # the command line sees the stream's messages too
        out = subprocess.run([hfutil.holdfast_bin(), 'tail', '--db', self.db, '--since', '0',
                              '--once', 'both'], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len([x for x in out.stdout.splitlines() if x.strip()]), 6, out.stdout)

    def test_retention_leaves_streams_alone(self):
        self.serve('publish_key = %s\nretain_messages = 3\nprune_every = 1\n' % KEY)
        self.create('keep')
        for i in range(10):
            self.append('keep', b'%d' % i)
            hfutil.publish(self.srv.addr, 'plain', 'm%d' % i,
                           headers={'Authorization': 'Bearer ' + KEY})
        st, _, b = self.ds('GET', 'keep')
        self.assertEqual(b, b'0123456789')
        st, _, b = request(self.srv.addr, 'GET', '/sub/plain', 'since=0&timeout=0')
        self.assertEqual(len(body_json(b)['messages']), 3)  # the channel is pruned

    # ---- live reads ---------------------------------------------------------------

    def test_long_poll_woken_by_an_append_through_another_worker(self):
        self.serve('publish_key = %s\nstreams_poll_timeout = 20\n' % KEY, workers=2)
        tail = self.create('live')
        got = {}

        def poll():
            t0 = time.monotonic()
            got['answer'] = self.ds('GET', 'live', 'offset=%s&live=long-poll' % tail,
                                    timeout=30)
            got['took'] = time.monotonic() - t0

        threads = [threading.Thread(target=poll)]
        threads[0].start()
        time.sleep(0.5)
        # publishes spread over both workers: some other than the parked one
        for i in range(4):
            conns = hfutil.park_many(self.srv.addr, 1, '/v1/stream/live', spread=True)
            hfutil.close_all(conns)
        self.append('live', b'news')
        threads[0].join(30)
        st, h, b = got['answer']
        self.assertEqual((st, b), (200, b'news'))
        self.assertLess(got['took'], 5)
        self.assertIn('stream-cursor', h)
        self.assertEqual(h.get('stream-up-to-date'), 'true')

    def test_close_ends_a_parked_long_poll_at_once(self):
        self.serve('publish_key = %s\nstreams_poll_timeout = 20\n' % KEY)
        tail = self.create('ending')
        got = {}

        def poll():
            got['answer'] = self.ds('GET', 'ending', 'offset=%s&live=long-poll' % tail,
                                    timeout=30)
            got['at'] = time.monotonic()

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.5)
        st, h, b = self.ds('POST', 'ending', headers={'Stream-Closed': 'true'})
        self.assertEqual(st, 204, b)
        closed_at = time.monotonic()
        t.join(30)
        st, h, b = got['answer']
        self.assertEqual(st, 204, b)
        self.assertEqual(h.get('stream-closed'), 'true')
        self.assertEqual(h['stream-next-offset'], tail)  # closing appends no data
        self.assertLess(got['at'] - closed_at, 2)

    def test_streams_poll_timeout_bounds_a_long_poll(self):
        self.serve('publish_key = %s\nstreams_poll_timeout = 1\n' % KEY)
        tail = self.create('idle')
        t0 = time.monotonic()
        st, h, b = self.ds('GET', 'idle', 'offset=%s&live=long-poll' % tail, timeout=10)
        took = time.monotonic() - t0
        self.assertEqual(st, 204, b)
        self.assertEqual(h.get('stream-up-to-date'), 'true')
        self.assertEqual(h['stream-next-offset'], tail)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 4)

    def test_cgi_front_serves_streams_and_long_polls(self):
        cfg = hfutil.write_config(os.path.join(self.tmp, 'cgi.conf'),
                                  'publish_key = %s\nstreams_poll_timeout = 1\n' % KEY,
                                  closed=True)
        auth = {'HTTP_AUTHORIZATION': 'Bearer ' + KEY}

        def cgi(method, query='', body=b'', **env):
            e = dict(auth, REQUEST_METHOD=method, PATH_INFO='/v1/stream/c', QUERY_STRING=query,
                     **env)
            return hfutil.run_cgi(e, body=body, db=self.db, config_path=cfg)[:3]

        st, h, b = cgi('PUT', CONTENT_TYPE='text/plain', CONTENT_LENGTH='2', body=b'ab')
        self.assertEqual(st, 201, b)
        st, h, b = cgi('POST', CONTENT_TYPE='text/plain', CONTENT_LENGTH='2', body=b'cd')
        self.assertEqual(st, 204, b)
        tail = h['stream-next-offset']
        st, h, b = cgi('GET')
        self.assertEqual((st, b), (200, b'abcd'))
        t0 = time.monotonic()
        st, h, b = cgi('GET', 'offset=%s&live=long-poll' % tail)
        self.assertEqual(st, 204, b)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)

    # ---- upgrades -------------------------------------------------------------------

    def test_a_database_with_streams_stays_schema_2(self):
        """A worker of the previous release refuses a user_version above 2:
        streams add tables beside the schema, never a new version."""
        self.serve('publish_key = %s\n' % KEY)
        self.create('s', body=b'x')
        self.srv.stop()
        con = sqlite3.connect(self.db)
        self.addCleanup(con.close)
        self.assertEqual(con.execute('PRAGMA user_version').fetchone()[0], 2)
        names = con.execute("SELECT name FROM sqlite_schema WHERE type='table'").fetchall()
        self.assertIn(('ds_stream',), names)
        self.assertIn(('message',), names)


if __name__ == '__main__':
    unittest.main()
