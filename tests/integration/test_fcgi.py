"""Integration tests of holdfast over FastCGI (our own client), CGI and lighttpd.

Each test gets its own temporary directory, database and server; every
process is stopped (or killed) in the cleanup. Names say what each proves.
"""
import base64
import json
import os
import resource
import signal
import subprocess
import threading
import time
import unittest

import hfutil
from hfutil import (FcgiConn, HoldfastServer, Lighttpd, close_all, collect, park_many,
                    publish, publish_cli, request, run_cgi, cgi_popen, stats, wait_for)

HEX = set('0123456789abcdef')


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class HoldfastTest(unittest.TestCase):
    """A temp dir per test; servers and connections are cleaned up in reverse order."""

    def setUp(self):
        self.tmp = hfutil.make_tmpdir()
        self.addCleanup(hfutil.remove_tmpdir, self.tmp)
        self.db = os.path.join(self.tmp, 'hf.db')

    def serve(self, workers=1, config=None, warm=False, **kw):
        """Start `holdfast serve`. warm=True waits until every worker's dispatcher
        has made its first pass (its wake watcher ticks after data_version_ms,
        1 s by default): a subscriber parked before that pass is not woken by
        a publish (see test_01b and the report), which is not what the tests
        that use warm=True are about."""
        srv = HoldfastServer(self.tmp, workers=workers, config=config, db=self.db, **kw)
        self.addCleanup(srv.kill)
        srv.start()
        self.srv = srv
        if warm:
            time.sleep(1.5)
        return srv

    def lighttpd(self, mode, warm=False, **kw):
        """A private lighttpd; warm=True as in serve() (for the holdfast that
        lighttpd spawns at its start)."""
        lt = Lighttpd(self.tmp, mode, **kw)
        self.addCleanup(lt.kill)
        lt.start()
        if warm:
            time.sleep(1.5)
        return lt

    def park(self, addr, n, path, query, spread=False):
        conns = park_many(addr, n, path, query, spread=spread)
        self.addCleanup(close_all, conns)
        return conns

    def conn(self, addr, path, query):
        c = FcgiConn(addr, 'GET', path, query)
        self.addCleanup(c.close)
        return c

    # ---- assertions --------------------------------------------------------

    def get(self, path, query='', headers=None, timeout=10, addr=None):
        return request(addr or self.srv.addr, 'GET', path, query, headers, timeout=timeout)

    def sub(self, path, query, headers=None, timeout=10, addr=None):
        """A subscribe that must answer 200 JSON; returns the parsed body."""
        st, h, b = self.get(path, query, headers, timeout, addr)
        self.assertEqual(st, 200, b)
        self.assertEqual(h.get('content-type'), 'application/json')
        self.assertEqual(h.get('cache-control'), 'no-store')
        return json.loads(b)

    def pub(self, channel, data, headers=None, status=201, addr=None):
        st, j = publish(addr or self.srv.addr, channel, data, headers)
        self.assertEqual(st, status, j)
        return j['id']

    def assertErrorAnswer(self, answer, status, error=None):
        st, h, b = answer
        self.assertEqual(st, status, b)
        self.assertEqual(h.get('content-type'), 'application/json', h)
        self.assertEqual(h.get('cache-control'), 'no-store')
        j = json.loads(b)
        self.assertIsInstance(j.get('error'), str, j)
        self.assertIsInstance(j.get('detail'), str, j)
        self.assertTrue(j['error'] and j['detail'], j)
        if error:
            self.assertEqual(j['error'], error, j)
        return j

    def assertEpoch(self, e):
        self.assertIsInstance(e, str)
        self.assertTrue(1 <= len(e) <= 16 and set(e) <= HEX, e)

    def wait_parked(self, n, timeout=10, addr=None):
        wait_for(lambda: stats(addr or self.srv.addr)['parked'] == n, timeout,
                 what='/stats parked == %d' % n)

    def parked_per_worker(self, srv, total, timeout=10):
        """Ask /stats until its per-worker list names every worker and their
        waiting subscribers add up to total (as does "parked"); returns
        {pid: waiting}."""
        pids = set(srv.worker_pids())
        last = {}

        def done():
            s = stats(srv.addr)
            last['stats'] = s
            per = {w['pid']: w['waiting'] for w in s.get('workers', [])}
            return set(per) == pids and sum(per.values()) == total == s['parked'] and per
        try:
            return wait_for(done, timeout, interval=0.02)
        except AssertionError:
            self.fail('parked per worker never added up to %d: %r (workers %r)' %
                      (total, last.get('stats'), pids))

    def park_on_every_worker(self, srv, path, query, first=20, step=10, rounds=20):
        """Park `first` subscribers, then more in groups until each worker holds
        at least one."""
        conns = []
        for r in range(rounds):
            conns += self.park(srv.addr, first if r == 0 else step, path, query, spread=True)
            per = self.parked_per_worker(srv, len(conns))
            if all(v > 0 for v in per.values()):
                return conns, per
        self.fail('after %d subscribers some worker holds none: %r' % (len(conns), per))

    def assertAllGot(self, answers, ids, channel=None):
        for i, a in enumerate(answers):
            self.assertIsNotNone(a, 'subscriber %d got no answer' % i)
            st, _, b = a
            self.assertEqual(st, 200, b)
            j = json.loads(b)
            self.assertEqual([m['id'] for m in j['messages']], ids, j)
            self.assertEqual(j['cursor'], ids[-1])
            if channel:
                self.assertTrue(all(m['channel'] == channel for m in j['messages']))


# =============================================================================
# delivery and resume
# =============================================================================

class DeliveryTest(HoldfastTest):

    def test_01_parked_subscriber_gets_message_published_after_it_parked(self):
        self.serve(warm=True)
        c = self.conn(self.srv.addr, '/sub/news', 'timeout=20')
        self.wait_parked(1)
        t0 = time.monotonic()
        mid = self.pub('news', 'hello')
        [a] = collect([c], 5)
        latency = time.monotonic() - t0
        self.assertIsNotNone(a, 'the parked subscriber was not answered')
        st, h, b = a
        self.assertEqual(st, 200, b)
        j = json.loads(b)
        self.assertEqual(len(j['messages']), 1, j)
        m = j['messages'][0]
        self.assertEqual((m['id'], m['channel'], m['data'], m['type']),
                         (mid, 'news', 'hello', 'text/plain'))
        self.assertEqual(j['cursor'], mid)
        self.assertIs(j['gap'], False)
        self.assertEpoch(j['epoch'])
        self.assertLess(latency, 1.0, 'delivery took %.3fs' % latency)
        self.assertEqual(stats(self.srv.addr)['parked'], 0)

    def test_01b_subscriber_parked_in_the_first_second_of_a_worker_gets_the_message(self):
        # What every client does after a restart or a SIGHUP reload: re-poll at
        # once with its cursor into the new worker. A message published before
        # that worker's first dispatcher pass must still reach it, and above all
        # the answer's cursor must not skip it.
        self.pub_cli_before_start = publish_cli(self.db, 'news', 'before the restart')
        self.serve()
        head = self.pub_cli_before_start
        c = self.conn(self.srv.addr, '/sub/news', 'since=%d&timeout=3' % head)
        self.wait_parked(1)
        mid = self.pub('news', 'right after the restart')
        [a] = collect([c], 5)
        self.assertIsNotNone(a)
        j = json.loads(a[2])
        got = [m['id'] for m in j['messages']]
        if not got and j['cursor'] >= mid:
            self.fail('message %d LOST: the parked subscriber (since=%d) was not woken and '
                      'its timeout answer has cursor %d, past the message (worker.c: '
                      'first dispatcher pass skips waiters)' % (mid, head, j['cursor']))
        self.assertEqual(got, [mid], j)

    def test_02_one_response_carries_every_message_after_the_cursor(self):
        self.serve()
        self.pub('news', 'before')
        self.pub('other', 'not for news')
        head0 = stats(self.srv.addr)['head']
        ids = [self.pub('news', 'm%d' % i) for i in range(5)]
        j = self.sub('/sub/news', 'since=%d&timeout=2' % head0)
        got = [m['id'] for m in j['messages']]
        self.assertEqual(got, ids)
        self.assertEqual(got, sorted(got))
        self.assertEqual(len(set(got)), 5)
        self.assertEqual([m['data'] for m in j['messages']], ['m%d' % i for i in range(5)])
        self.assertEqual(j['cursor'], ids[-1])
        # and the cursor it gave leads to nothing more on this channel
        j2 = self.sub('/sub/news', 'since=%d&timeout=0' % j['cursor'])
        self.assertEqual(j2['messages'], [])

    def test_02b_last_k_limit_more_multichannel_and_last_event_id(self):
        self.serve(config={'batch_limit': 50})
        a = [self.pub('a', 'a%d' % i) for i in range(3)]
        b = [self.pub('b', 'b%d' % i) for i in range(3)]
        # last=K: the newest K retained messages, then follow
        j = self.sub('/sub/a', 'last=2&timeout=0')
        self.assertEqual([m['id'] for m in j['messages']], a[1:])
        # several channels: every message of each, in id order
        j = self.sub('/sub/b,a', 'since=0&timeout=0')
        self.assertEqual([m['id'] for m in j['messages']], sorted(a + b))
        self.assertEqual(j['cursor'], b[-1])
        # limit: more remain -> "more", and the cursor is the last one delivered
        j = self.sub('/sub/a,b', 'since=0&limit=4&timeout=30')
        self.assertEqual([m['id'] for m in j['messages']], sorted(a + b)[:4])
        self.assertIs(j.get('more'), True, j)
        self.assertEqual(j['cursor'], sorted(a + b)[3])
        t0 = time.monotonic()
        j = self.sub('/sub/a,b', 'since=%d&limit=4&timeout=30' % j['cursor'])
        self.assertLess(time.monotonic() - t0, 1, 'the rest did not come at once')
        self.assertEqual([m['id'] for m in j['messages']], sorted(a + b)[4:])
        self.assertNotIn('more', j)
        # Last-Event-ID is a cursor too; since wins over it
        j = self.sub('/sub/b', 'timeout=0', {'Last-Event-ID': str(b[0])})
        self.assertEqual([m['id'] for m in j['messages']], b[1:])
        j = self.sub('/sub/b', 'since=%d&timeout=0' % b[1], {'Last-Event-ID': str(b[0])})
        self.assertEqual([m['id'] for m in j['messages']], b[2:])
        # limit is capped by batch_limit, not refused
        self.assertEqual(self.get('/sub/a', 'since=0&limit=100000&timeout=0')[0], 200)

    def test_03_resume_after_dropped_connection_returns_exactly_the_missed_messages(self):
        self.serve()
        self.pub('news', 'seen')
        j = self.sub('/sub/news', 'since=0&timeout=1')
        cursor = j['cursor']
        c = self.conn(self.srv.addr, '/sub/news', 'since=%d&timeout=30' % cursor)
        self.wait_parked(1)
        c.close()                       # the client drops while parked
        self.wait_parked(0, timeout=5)
        missed = [self.pub('news', 'missed%d' % i) for i in range(3)]
        self.pub('other', 'unrelated')
        j = self.sub('/sub/news', 'since=%d&timeout=2' % cursor)
        self.assertEqual([m['id'] for m in j['messages']], missed)
        self.assertEqual([m['data'] for m in j['messages']], ['missed0', 'missed1', 'missed2'])
        # the cursor may be the head (past the other channel's message): safe either way
        self.assertTrue(missed[-1] <= j['cursor'] <= missed[-1] + 1, j['cursor'])
        self.assertIs(j['gap'], False)
        # nothing twice: the next poll with the new cursor is empty
        j = self.sub('/sub/news', 'since=%d&timeout=1' % j['cursor'])
        self.assertEqual(j['messages'], [])

    def test_04_timeout_answers_200_empty_with_safe_cursor_and_raw_answers_204(self):
        self.serve(warm=True)
        self.pub('news', 'a')
        head = self.pub('news', 'b')
        for query in ('since=%d&timeout=1' % head, 'timeout=1'):
            t0 = time.monotonic()
            j = self.sub('/sub/news', query)
            took = time.monotonic() - t0
            self.assertEqual(j['messages'], [], query)
            self.assertGreaterEqual(j['cursor'], head, query)
            self.assertEpoch(j['epoch'])
            self.assertIs(j['gap'], False)
            self.assertNotIn('reset', j)
            self.assertTrue(0.8 <= took < 4, 'timeout=1 answered after %.2fs' % took)
        st, h, b = self.get('/sub/news', 'since=%d&timeout=1&format=raw' % head)
        self.assertEqual(st, 204, b)
        self.assertEqual(b, b'')
        self.assertEqual(h.get('cache-control'), 'no-store')
        # a parked raw subscriber is woken with the message itself
        c = self.conn(self.srv.addr, '/sub/news', 'since=%d&timeout=10&format=raw' % head)
        self.wait_parked(1)
        m3 = self.pub('news', 'raw body', {'Content-Type': 'application/x-ndjson'})
        self.pub('news', 'and another')
        [a] = collect([c], 5)
        self.assertIsNotNone(a)
        self.assertEqual((a[0], a[2], a[1].get('holdfast-id'), a[1].get('content-type')),
                         (200, b'raw body', str(m3), 'application/x-ndjson'))
        self.assertEqual(a[1].get('content-security-policy'), 'sandbox')
        # raw with a message: its own body, type and id
        st, h, b = self.get('/sub/news', 'since=%d&timeout=1&format=raw' % (head - 1))
        self.assertEqual((st, b, h.get('holdfast-id')), (200, b'b', str(head)))
        self.assertEqual(h.get('content-type'), 'text/plain')

    def test_05_gap_after_retention_reports_oldest_and_the_retained_messages(self):
        self.serve(config={'retain_messages': 3, 'prune_every': 1})
        ids = [self.pub('news', 'n%d' % i) for i in range(10)]
        j = self.sub('/sub/news', 'since=0&timeout=1')
        self.assertIs(j['gap'], True, j)
        self.assertEqual(j['oldest'], ids[7])
        self.assertEqual([m['id'] for m in j['messages']], ids[7:])
        self.assertEqual([m['data'] for m in j['messages']], ['n7', 'n8', 'n9'])
        self.assertEqual(j['cursor'], ids[-1])
        # a cursor at the last pruned id lost nothing
        j = self.sub('/sub/news', 'since=%d&timeout=1' % ids[6])
        self.assertIs(j['gap'], False, j)
        self.assertEqual([m['id'] for m in j['messages']], ids[7:])

    def test_06_replaced_database_answers_old_epoch_and_future_cursor_with_reset(self):
        self.serve(warm=True)
        for i in range(3):
            self.pub('news', 'old%d' % i)
        j = self.sub('/sub/news', 'since=0&timeout=1')
        old_cursor, old_epoch = j['cursor'], j['epoch']
        self.assertEqual(old_cursor, 3)
        # a subscriber parked on the old database when it is replaced
        parked = self.conn(self.srv.addr, '/sub/news',
                           'since=%d&epoch=%s&timeout=30' % (old_cursor, old_epoch))
        self.wait_parked(1)
        # a new database, renamed over the one the server is running on
        new = os.path.join(self.tmp, 'new.db')
        self.assertEqual(publish_cli(new, 'news', 'fresh'), 1)
        for suffix in ('-wal', '-shm'):
            if os.path.exists(new + suffix):
                os.rename(new + suffix, self.db + suffix)
            elif os.path.exists(self.db + suffix):
                os.unlink(self.db + suffix)
        os.rename(new, self.db)
        # the parked one is told to reset (the dispatcher looks every ~1 s)
        [a] = collect([parked], 5)
        self.assertIsNotNone(a, 'the parked subscriber was not told about the new database')
        jp = json.loads(a[2])
        self.assertIs(jp.get('reset'), True, jp)
        self.assertEqual(jp['head'], 1)
        self.assertNotEqual(jp['epoch'], old_epoch)
        time.sleep(1.2)   # every request thread re-checks the file at most once a second
        j = self.sub('/sub/news', 'since=%d&epoch=%s&timeout=2' % (old_cursor, old_epoch))
        self.assertIs(j.get('reset'), True, j)
        self.assertEqual(j['head'], 1)
        self.assertEqual(j['cursor'], 1)
        new_epoch = j['epoch']
        self.assertEpoch(new_epoch)
        self.assertNotEqual(new_epoch, old_epoch)
        j = self.sub('/sub/news', 'since=%d&timeout=2' % 10 ** 9)
        self.assertIs(j.get('reset'), True, j)
        self.assertEqual(j['head'], 1)
        # a client that reloads follows the new log
        j = self.sub('/sub/news', 'since=0&epoch=%s&timeout=2' % new_epoch)
        self.assertNotIn('reset', j)
        self.assertEqual([m['data'] for m in j['messages']], ['fresh'])
        self.assertEqual(self.pub('news', 'after'), 2)

    def test_06c_publish_acknowledged_right_after_database_replacement_is_not_lost(self):
        # Within a second of the replacement a request thread still holds the
        # old (unlinked) file: a publish must then land in the new database or
        # be refused -- not be acknowledged into a file nobody can read again.
        self.serve()
        for i in range(3):
            self.pub('news', 'old%d' % i)
        new = os.path.join(self.tmp, 'new.db')
        publish_cli(new, 'news', 'fresh')
        for suffix in ('-wal', '-shm'):
            if os.path.exists(new + suffix):
                os.rename(new + suffix, self.db + suffix)
            elif os.path.exists(self.db + suffix):
                os.unlink(self.db + suffix)
        os.rename(new, self.db)
        st, ack = publish(self.srv.addr, 'news', 'acknowledged after the replacement')
        time.sleep(1.2)
        j = self.sub('/sub/news', 'since=0&timeout=0')
        datas = [m['data'] for m in j['messages']]
        self.assertEqual(datas[0], 'fresh')       # we read the new database
        if st in (200, 201):
            self.assertIn('acknowledged after the replacement', datas,
                          'publish answered %d %r but the message is in no database the '
                          'server reads (handler.c: the file is re-checked at most once a '
                          'second)' % (st, ack))

    def test_06b_cursor_ahead_of_the_log_and_foreign_epoch_answer_reset(self):
        self.serve()
        self.pub('news', 'x')
        j = self.sub('/sub/news', 'since=%d&timeout=2' % 10 ** 9)
        self.assertIs(j.get('reset'), True, j)
        self.assertEqual((j['head'], j['cursor'], j['messages']), (1, 1, []))
        j = self.sub('/sub/news', 'since=0&epoch=0123456789abcdef&timeout=2')
        self.assertIs(j.get('reset'), True, j)

    def test_07_client_that_disconnects_while_parked_is_freed(self):
        self.serve(workers=1, warm=True)
        conns = self.park(self.srv.addr, 20, '/sub/news', 'timeout=30')
        self.wait_parked(20)
        for c in conns[:10]:
            c.close()
        self.wait_parked(10, timeout=5)
        s = stats(self.srv.addr)
        self.assertEqual(s['left'], 10)
        # the other ten are still served
        mid = self.pub('news', 'still here')
        self.assertAllGot(collect(conns[10:], 5), [mid])

    def test_08_2000_parked_subscribers_on_one_worker_all_receive_one_message(self):
        n = 2000
        limit = raise_nofile()
        if limit < n + 200:
            self.skipTest('RLIMIT_NOFILE %d is too low for %d connections' % (limit, n))
        self.serve(workers=1, warm=True)   # inherits the raised limit
        t0 = time.monotonic()
        conns = self.park(self.srv.addr, n, '/sub/news', 'timeout=30')
        self.wait_parked(n, timeout=30)
        parked_in = time.monotonic() - t0
        t1 = time.monotonic()
        mid = self.pub('news', 'to everyone')
        answers = collect(conns, 10)
        missing = sum(a is None for a in answers)
        self.assertEqual(missing, 0, '%d of %d got no answer within 10 s' % (missing, n))
        self.assertAllGot(answers, [mid], 'news')
        slowest = max(c.answered_at for c in conns) - t1
        self.assertLess(slowest, 10)
        s = stats(self.srv.addr)
        self.assertEqual(s['parked'], 0)
        self.assertGreaterEqual(s['deliveries'], n)
        print('\n    [2000 subscribers: parked in %.2fs, all answered %.3fs after the '
              'publish]' % (parked_in, slowest), end=' ', flush=True)


# =============================================================================
# waking across processes
# =============================================================================

class CrossProcessTest(HoldfastTest):

    def test_09a_two_workers_both_answer_and_a_publish_wakes_subscribers_in_both(self):
        srv = self.serve(workers=2, warm=True)
        pids = set()
        for _ in range(50):
            pids |= {s['pid'] for s in hfutil.stats_many(srv.addr)}
            if len(pids) == 2:
                break
        self.assertEqual(pids, set(srv.worker_pids()),
                         '/stats never showed two different workers')
        conns, per = self.park_on_every_worker(srv, '/sub/news', 'timeout=30')
        self.assertGreaterEqual(len(conns), 20)
        mid = self.pub('news', 'cross-worker')
        self.assertAllGot(collect(conns, 5), [mid])

    def test_09b_holdfast_publish_cli_wakes_subscribers_parked_in_every_worker(self):
        srv = self.serve(workers=2, warm=True)
        conns, _ = self.park_on_every_worker(srv, '/sub/news', 'timeout=30')
        t0 = time.monotonic()
        mid = publish_cli(self.db, 'news', 'from the cli')
        answers = collect(conns, 5)
        self.assertAllGot(answers, [mid])
        took = max(c.answered_at for c in conns) - t0
        self.assertLess(took, 2.0, 'the futex wake took %.2fs' % took)

    def test_09c_plain_sql_insert_into_publish_view_wakes_parked_subscribers(self):
        srv = self.serve(workers=2, warm=True)
        conns, _ = self.park_on_every_worker(srv, '/sub/news', 'timeout=30')
        head = stats(srv.addr)['head']
        t0 = time.monotonic()
        sql = "INSERT INTO publish(channel, body) VALUES ('news', 'x')"
        subprocess.run(['sqlite3', '-cmd', '.timeout 5000', self.db, sql], check=True,
                       capture_output=True, timeout=20)
        answers = collect(conns, 5)
        took = time.monotonic() - t0
        self.assertAllGot(answers, [head + 1])
        self.assertEqual(json.loads(answers[0][2])['messages'][0]['data'], 'x')
        self.assertLess(took, 5)


# =============================================================================
# CGI
# =============================================================================

class CgiTest(HoldfastTest):

    def test_10a_cgi_publish_then_subscribe(self):
        st, h, b, err = run_cgi({'REQUEST_METHOD': 'POST', 'PATH_INFO': '/pub/news',
                                 'CONTENT_TYPE': 'application/json'}, b'{"a": [1, 2]}',
                                db=self.db)
        self.assertEqual(st, 201, (b, err))
        mid = json.loads(b)['id']
        st, h, b, err = run_cgi({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/sub/news',
                                 'QUERY_STRING': 'since=0&timeout=1'}, db=self.db)
        self.assertEqual(st, 200, (b, err))
        j = json.loads(b)
        self.assertEqual([m['id'] for m in j['messages']], [mid])
        self.assertEqual(j['messages'][0]['data'], {'a': [1, 2]})
        # errors come out as CGI answers too
        st, h, b, err = run_cgi({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/sub/bad!'},
                                db=self.db)
        self.assertErrorAnswer((st, h, b), 400, 'bad_channel')
        st, h, b, err = run_cgi({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/sub/news',
                                 'QUERY_STRING': 'since=%d&timeout=1' % mid}, db=self.db)
        self.assertEqual((st, json.loads(b)['messages']), (200, []))

    def test_10b_cgi_subscribe_blocks_until_another_process_publishes(self):
        head = publish_cli(self.db, 'news', 'first')
        for publisher in ('cgi', 'cli'):
            p = cgi_popen({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/sub/news',
                           'QUERY_STRING': 'since=%d&timeout=20' % head}, db=self.db)
            self.addCleanup(lambda p=p: (p.poll() is None and p.kill(), p.wait()))
            time.sleep(0.5)
            self.assertIsNone(p.poll(), 'the CGI subscribe did not wait')
            t0 = time.monotonic()
            if publisher == 'cgi':
                st, _, b, err = run_cgi({'REQUEST_METHOD': 'POST', 'PATH_INFO': '/pub/news',
                                         'CONTENT_TYPE': 'text/plain'}, b'second',
                                        db=self.db)
                self.assertEqual(st, 201, err)
                mid = json.loads(b)['id']
            else:
                mid = publish_cli(self.db, 'news', 'third')
            out, err = p.communicate(timeout=10)
            took = time.monotonic() - t0
            st, h, b = hfutil.parse_cgi_response(out)
            self.assertEqual(st, 200, (b, err))
            j = json.loads(b)
            self.assertEqual([m['id'] for m in j['messages']], [mid], publisher)
            self.assertLess(took, 2, '%s publish woke the CGI subscriber after %.2fs' %
                            (publisher, took))
            head = mid

    def test_10c_lighttpd_mod_cgi_publish_and_long_poll(self):
        if not hfutil.lighttpd_available():
            self.skipTest('no lighttpd')
        lt = self.lighttpd('cgi', db=self.db)
        st, h, b = lt.http('POST', '/cgi/hf.cgi/pub/news', b'via mod_cgi',
                           {'Content-Type': 'text/plain'})
        self.assertEqual(st, 201, b + lt.read_logs().encode())
        mid = json.loads(b)['id']
        st, h, b = lt.http('GET', '/cgi/hf.cgi/sub/news?since=0&timeout=2')
        self.assertEqual(st, 200, b)
        self.assertEqual([m['data'] for m in json.loads(b)['messages']], ['via mod_cgi'])
        # a long poll through mod_cgi woken by a publish from another process
        res = {}
        t = threading.Thread(target=lambda: res.update(
            a=lt.http('GET', '/cgi/hf.cgi/sub/news?since=%d&timeout=15' % mid, timeout=20)))
        t.start()
        time.sleep(0.7)
        mid2 = publish_cli(self.db, 'news', 'wake up')
        t.join(10)
        self.assertFalse(t.is_alive(), 'the mod_cgi long poll was not answered')
        st, h, b = res['a']
        self.assertEqual(st, 200, b)
        self.assertEqual([m['id'] for m in json.loads(b)['messages']], [mid2])
        lt.stop()


# =============================================================================
# shutdown
# =============================================================================

class ShutdownTest(HoldfastTest):

    def test_11_sigterm_answers_every_parked_request_and_all_processes_exit(self):
        srv = self.serve(workers=2)
        pids = set(srv.worker_pids()) | {srv.proc.pid}
        self.pub('news', 'x')
        conns = self.park(srv.addr, 5, '/sub/news', 'timeout=30', spread=True)
        self.parked_per_worker(srv, 5)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        answers = collect(conns, 5)
        took = time.monotonic() - t0
        for i, a in enumerate(answers):
            self.assertIsNotNone(a, 'parked request %d not answered after SIGTERM' % i)
            st, _, b = a
            self.assertEqual(st, 200, b)
            j = json.loads(b)
            self.assertEqual(j['messages'], [])
            self.assertEqual(j['cursor'], 1)
        self.assertLess(took, 5)
        rc = srv.proc.wait(10)
        self.assertEqual(rc, 0)
        self.assertTrue(hfutil.wait_pids_gone(pids, 5), 'processes left after SIGTERM')
        self.assertFalse(os.path.exists(srv.sock), 'socket file left behind')
        srv.stop()


class ReloadTest(HoldfastTest):

    def reload(self, srv, config):
        """Rewrite the config, SIGHUP the supervisor, wait for a new set of workers."""
        old = set(srv.worker_pids())
        hfutil.write_config(srv.config_path, config)
        srv.proc.send_signal(signal.SIGHUP)

        def replaced():
            now = set(srv.worker_pids())
            return len(now) == srv.workers and not (now & old) and now
        new = wait_for(replaced, 15, what='a new generation of workers')
        srv.refresh_pids()
        return old, new

    def test_15a_sighup_answers_parked_requests_and_applies_the_new_settings(self):
        srv = self.serve(workers=2, config={'max_body': '1k'})
        head = self.pub('news', 'x')
        self.assertErrorAnswer(request(srv.addr, 'POST', '/pub/news', body=b'y' * 1500), 413)
        conns = self.park(srv.addr, 6, '/sub/news', 'since=%d&timeout=30' % head, spread=True)
        self.parked_per_worker(srv, 6)
        t0 = time.monotonic()
        old, new = self.reload(srv, {'max_body': '2k'})
        answers = collect(conns, 5)
        for a in answers:
            self.assertIsNotNone(a, 'a parked request was not answered on reload')
            self.assertEqual(a[0], 200, a[2])
            j = json.loads(a[2])
            self.assertEqual((j['messages'], j['cursor']), ([], head))
        self.assertLess(time.monotonic() - t0, 10)
        self.assertTrue(hfutil.wait_pids_gone(old, 5), 'old workers still running')
        st, _, b = request(srv.addr, 'POST', '/pub/news', body=b'y' * 1500)
        self.assertEqual(st, 201, b)
        self.assertEqual(srv.stop(), 0)

    def test_15b_subscribers_repolling_right_after_a_reload_lose_no_message(self):
        # pool.c: "the old workers answer their parked subscribers, which re-poll
        # (with their cursors) into the new ones, so no message is lost"
        srv = self.serve(workers=1, warm=True)
        head = self.pub('news', 'x')
        conns = self.park(srv.addr, 3, '/sub/news', 'since=%d&timeout=30' % head)
        self.wait_parked(3)
        self.reload(srv, '')
        for a in collect(conns, 5):
            self.assertEqual(json.loads(a[2])['cursor'], head)
        # they come back at once with their cursor, and a message follows
        conns = self.park(srv.addr, 3, '/sub/news', 'since=%d&timeout=3' % head)
        self.wait_parked(3)
        mid = self.pub('news', 'published just after the reload')
        for a in collect(conns, 6):
            self.assertIsNotNone(a)
            j = json.loads(a[2])
            if not j['messages'] and j['cursor'] >= mid:
                self.fail('message %d LOST after the reload: answer %r' % (mid, j))
            self.assertEqual([m['id'] for m in j['messages']], [mid])


class PoolTest(HoldfastTest):

    def test_16a_killed_worker_is_replaced_and_the_pool_keeps_serving(self):
        srv = self.serve(workers=2)
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)

        def replaced():
            now = set(srv.worker_pids())
            return len(now) == 2 and victim not in now and now
        wait_for(replaced, 10, what='a replacement worker')
        srv.refresh_pids()
        mid = self.pub('news', 'after the crash')
        j = self.sub('/sub/news', 'since=0&timeout=0')
        self.assertEqual([m['id'] for m in j['messages']], [mid])
        self.assertIn('replacing it', srv.read_log())
        self.assertEqual(srv.stop(), 0)

    def test_16b_tcp_listener_on_loopback_and_fcgi_web_server_addrs(self):
        port = hfutil.free_port()
        srv = self.serve(listen='127.0.0.1:%d' % port)
        self.assertEqual(request(('127.0.0.1', port), 'GET', '/health')[0], 200)
        self.pub('news', 'over tcp', addr=('127.0.0.1', port))
        srv.stop()
        # only the listed web servers may talk to a TCP socket
        port = hfutil.free_port()
        srv2 = HoldfastServer(self.tmp, listen='127.0.0.1:%d' % port, db=self.db,
                              env={'FCGI_WEB_SERVER_ADDRS': '10.9.9.9'})
        self.addCleanup(srv2.kill)
        srv2.start(wait=False)
        refused = wait_for(lambda: self._refused(('127.0.0.1', port)), 10,
                           what='a TCP connection from 127.0.0.1 being closed unanswered')
        self.assertTrue(refused)
        srv2.stop()

    @staticmethod
    def _refused(addr):
        try:
            request(addr, 'GET', '/health', timeout=3)
        except ConnectionRefusedError:
            return False      # not listening yet
        except (hfutil.FcgiError, ConnectionResetError, BrokenPipeError):
            return True       # accepted, then closed without an answer
        raise AssertionError('a peer outside FCGI_WEB_SERVER_ADDRS was answered')


# =============================================================================
# errors and the HTTP contract
# =============================================================================

class ErrorTest(HoldfastTest):

    def test_12a_bad_channel_bad_cursor_too_many_channels_404_405_answer_json_errors(self):
        self.serve()
        a = self.srv.addr
        for path in ('/sub/bad!name', '/sub/', '/sub/a,,b', '/sub/' + 'x' * 129,
                     '/sub/sp%20ace', '/sub/a/b'):
            self.assertErrorAnswer(request(a, 'GET', path, 'timeout=0'), 400, 'bad_channel')
        self.assertErrorAnswer(request(a, 'POST', '/pub/a,b', body=b'x'), 400, 'bad_channel')
        self.assertErrorAnswer(request(a, 'GET', '/sub/news', 'since=abc'), 400, 'bad_cursor')
        self.assertErrorAnswer(request(a, 'GET', '/sub/news', 'since=-1'), 400, 'bad_cursor')
        self.assertErrorAnswer(request(a, 'GET', '/sub/news', headers={
            'Last-Event-ID': 'abc'}), 400, 'bad_cursor')
        for q in ('timeout=x', 'limit=0', 'format=xml', 'epoch=xyz', 'last=-2'):
            self.assertErrorAnswer(request(a, 'GET', '/sub/news', q), 400, 'bad_parameter')
        chans = ','.join('c%d' % i for i in range(17))
        self.assertErrorAnswer(request(a, 'GET', '/sub/' + chans, 'timeout=0'), 400,
                               'too_many_channels')
        chans16 = ','.join('c%d' % i for i in range(16))
        self.assertEqual(request(a, 'GET', '/sub/' + chans16, 'timeout=0')[0], 200)
        self.assertEqual(request(a, 'GET', '/sub/' + 'x' * 128, 'timeout=0')[0], 200)
        for path in ('/', '/nope', '/health/x', '/subscribe/news', '/pub'):
            self.assertErrorAnswer(request(a, 'GET', path), 404, 'not_found')
        self.assertErrorAnswer(request(a, 'GET', '/pub/news'), 405, 'method_not_allowed')
        self.assertErrorAnswer(request(a, 'POST', '/sub/news', body=b'x'), 405)
        self.assertErrorAnswer(request(a, 'DELETE', '/stats'), 405)
        self.assertErrorAnswer(request(a, 'POST', '/health', body=b''), 405)
        # and the worker is still fine
        self.assertEqual(request(a, 'GET', '/health')[0], 200)
        st, h, b = request(a, 'GET', '/metrics')
        self.assertEqual(st, 200)
        self.assertTrue(h.get('content-type', '').startswith('text/plain'), h)
        self.assertIn(b'holdfast_head 0', b)

    def test_12h_unknown_query_parameters_are_ignored_even_long_ones(self):
        # request.c: "Unknown query parameters are ignored (cache busters such
        # as `_=123`)" -- a signed token or a tracking parameter is often
        # longer than 63 bytes.
        self.serve()
        mid = self.pub('news', 'x')
        for extra in ('_=1763776000123', 'v=' + 'a' * 63, 'token=' + 'eyJhbGciOi' * 12,
                      'utm_content=' + 'b' * 100, 'x' * 40 + '=1'):
            st, h, b = self.get('/sub/news', 'since=0&timeout=0&' + extra)
            self.assertEqual(st, 200, '%s... -> %d %s' % (extra[:20], st, b))
            self.assertEqual([m['id'] for m in json.loads(b)['messages']], [mid])

    def test_12b_publish_key_401_without_key_403_wrong_key_201_right_key(self):
        self.serve(config={'publish_key': 's3cret-key'})
        a = self.srv.addr
        self.assertErrorAnswer(request(a, 'POST', '/pub/news', body=b'x'), 401,
                               'unauthorized')
        self.assertErrorAnswer(request(a, 'POST', '/pub/news', body=b'x', headers={
            'Authorization': 'Bearer wrong'}), 403, 'forbidden')
        self.assertErrorAnswer(request(a, 'POST', '/pub/news', body=b'x', headers={
            'Authorization': 'Bearer s3cret-key-but-longer'}), 403, 'forbidden')
        st, h, b = request(a, 'POST', '/pub/news', body=b'x', headers={
            'Authorization': 'Bearer s3cret-key'})
        self.assertEqual(st, 201, b)
        self.assertEqual(json.loads(b)['id'], 1)
        self.assertEqual(stats(a)['head'], 1)   # refused publishes left no trace

    def test_12c_body_over_max_body_is_413(self):
        self.serve(config={'max_body': '1k'})
        a = self.srv.addr
        self.assertErrorAnswer(request(a, 'POST', '/pub/news', body=b'x' * 1025), 413,
                               'body_too_large')
        # without a Content-Length the body itself is measured
        self.assertErrorAnswer(request(a, 'POST', '/pub/news', body=b'y' * 5000,
                                       extra={'CONTENT_LENGTH': ''}), 413, 'body_too_large')
        st, _, b = request(a, 'POST', '/pub/news', body=b'z' * 1024)
        self.assertEqual(st, 201, b)
        self.assertEqual(stats(a)['head'], 1)

    def test_12d_invalid_json_body_with_json_content_type_is_400(self):
        self.serve()
        a = self.srv.addr
        for ctype in ('application/json', 'application/json; charset=utf-8'):
            self.assertErrorAnswer(request(a, 'POST', '/pub/news', headers={
                'Content-Type': ctype}, body=b'{"a": '), 400, 'invalid_json')
        st, _, b = request(a, 'POST', '/pub/news', headers={'Content-Type': 'application/json'},
                           body=b'{"a": [1, "two", null]}')
        self.assertEqual(st, 201, b)
        j = self.sub('/sub/news', 'since=0&timeout=0')
        self.assertEqual([m['data'] for m in j['messages']], [{'a': [1, 'two', None]}])
        self.assertEqual(j['messages'][0]['type'], 'application/json')

    def test_12e_full_worker_answers_503_with_retry_after(self):
        self.serve(workers=1, config={'max_parked': 2}, warm=True)
        m0 = self.pub('news', 'm0')
        conns = self.park(self.srv.addr, 2, '/sub/news', 'since=%d&timeout=30' % m0)
        self.wait_parked(2)
        ans = request(self.srv.addr, 'GET', '/sub/news', 'since=%d&timeout=30' % m0,
                      timeout=5)
        self.assertErrorAnswer(ans, 503, 'full')
        self.assertTrue(ans[1].get('retry-after', '').isdigit(), ans[1])
        s = stats(self.srv.addr)
        self.assertEqual((s['parked'], s['refused']), (2, 1))
        # a subscribe that has news need not park: answered even when full
        self.assertEqual(len(self.sub('/sub/news', 'since=0&timeout=30')['messages']), 1)
        mid = self.pub('news', 'm')
        self.assertAllGot(collect(conns, 5), [mid])
        self.wait_parked(0)
        self.assertEqual(self.sub('/sub/news', 'since=0&timeout=1')['cursor'], mid)

    def test_12g_cors_preflight_errors_and_timeout_answers_carry_allow_origin(self):
        origin = 'https://example.test'
        self.serve(config={'cors_origin': origin}, warm=True)
        a = self.srv.addr
        h0 = {'Origin': origin}
        st, h, b = request(a, 'OPTIONS', '/sub/news', headers=dict(h0, **{
            'Access-Control-Request-Method': 'GET'}))
        self.assertEqual(st, 204, b)
        self.assertEqual(h.get('access-control-allow-origin'), origin)
        self.assertIn('GET', h.get('access-control-allow-methods', ''))
        self.assertIn('Authorization', h.get('access-control-allow-headers', ''))
        st, h, b = request(a, 'OPTIONS', '/pub/news', headers=h0)
        self.assertEqual((st, h.get('access-control-allow-origin')), (204, origin))
        # a parked request that times out, a raw timeout, an error, a publish
        st, h, b = request(a, 'GET', '/sub/news', 'timeout=1', h0)
        self.assertEqual(st, 200)
        self.assertEqual(h.get('access-control-allow-origin'), origin)
        self.assertEqual(json.loads(b)['messages'], [])
        st, h, b = request(a, 'GET', '/sub/news', 'timeout=1&format=raw', h0)
        self.assertEqual((st, h.get('access-control-allow-origin')), (204, origin))
        ans = request(a, 'GET', '/sub/bad!', '', h0)
        self.assertErrorAnswer(ans, 400)
        self.assertEqual(ans[1].get('access-control-allow-origin'), origin)
        st, h, b = request(a, 'POST', '/pub/news', headers=h0, body=b'x')
        self.assertEqual((st, h.get('access-control-allow-origin')), (201, origin))
        # a parked request woken by a publish
        c = FcgiConn(a, 'GET', '/sub/news', 'timeout=20', h0)
        self.addCleanup(c.close)
        self.wait_parked(1)
        self.pub('news', 'y')
        [ans] = collect([c], 5)
        self.assertEqual((ans[0], ans[1].get('access-control-allow-origin')), (200, origin))
        # another origin gets no CORS headers
        st, h, b = request(a, 'GET', '/sub/news', 'timeout=0', {'Origin': 'https://evil.test'})
        self.assertEqual(st, 200)
        self.assertNotIn('access-control-allow-origin', h)


class PublishTest(HoldfastTest):

    def test_13a_same_idempotency_key_twice_is_201_then_200_with_the_same_id(self):
        self.serve()
        long_key = 'k' * 150    # > 127 bytes: a 4-byte FastCGI name-value length
        for key in ('order-17', long_key):
            st, j1 = publish(self.srv.addr, 'news', 'pay', {'Idempotency-Key': key})
            self.assertEqual(st, 201, j1)
            st, j2 = publish(self.srv.addr, 'news', 'pay', {'Idempotency-Key': key})
            self.assertEqual(st, 200, j2)
            self.assertEqual(j2['id'], j1['id'])
            self.assertEqual(j2['channel'], 'news')
        head = stats(self.srv.addr)['head']
        self.assertEqual(head, 2)
        # the same key on another channel is another message
        st, j3 = publish(self.srv.addr, 'other', 'pay', {'Idempotency-Key': 'order-17'})
        self.assertEqual(st, 201)
        self.assertEqual(j3['id'], 3)
        j = self.sub('/sub/news', 'since=0&timeout=0')
        self.assertEqual(len(j['messages']), 2)
        self.assertErrorAnswer(request(self.srv.addr, 'POST', '/pub/news', body=b'x', headers={
            'Idempotency-Key': 'k' * 201}), 400, 'bad_header')

    def test_13b_holdfast_key_compaction_since0_returns_only_the_latest_per_key(self):
        self.serve()
        self.pub('dash', 'a1', {'Holdfast-Key': 'a'})
        b1 = self.pub('dash', 'b1', {'Holdfast-Key': 'b'})
        a2 = self.pub('dash', 'a2', {'Holdfast-Key': 'a'})
        plain = self.pub('dash', 'tail')
        j = self.sub('/sub/dash', 'since=0&timeout=0')
        self.assertEqual([(m['id'], m['data']) for m in j['messages']],
                         [(b1, 'b1'), (a2, 'a2'), (plain, 'tail')])
        self.assertIs(j['gap'], False)

    def test_13d_large_binary_and_text_bodies_round_trip_in_several_stdin_records(self):
        self.serve()
        big = bytes(range(256)) * 256           # 64 KiB, not UTF-8: two STDIN records
        st, j = publish(self.srv.addr, 'bin', big, {'Content-Type': 'application/octet-stream'})
        self.assertEqual(st, 201, j)
        text = 'h\u00e9llo w\u00f6rld \u2603 "quoted" \\ \n'.encode()
        st, j2 = publish(self.srv.addr, 'bin', text, {'Content-Type': 'text/plain; charset=utf-8'})
        self.assertEqual(st, 201, j2)
        st, j3 = publish(self.srv.addr, 'bin', b'', {'Content-Type': 'text/plain'})
        self.assertEqual(st, 201, j3)
        j = self.sub('/sub/bin', 'since=0&timeout=0')
        m1, m2, m3 = j['messages']
        self.assertEqual(m1.get('encoding'), 'base64', {k: v for k, v in m1.items()
                                                        if k != 'data'})
        self.assertEqual(base64.b64decode(m1['data']), big)
        self.assertEqual(m1['type'], 'application/octet-stream')
        self.assertEqual(m2['data'], text.decode())
        self.assertNotIn('encoding', m2)
        self.assertEqual(m3['data'], '')
        st, h, b = self.get('/sub/bin', 'since=0&format=raw&timeout=0')
        self.assertEqual((st, b, h.get('content-type')), (200, big, 'application/octet-stream'))

    def test_13c_route_falls_back_to_request_uri_minus_script_name(self):
        self.serve()
        self.pub('news', 'x')
        st, h, b = request(self.srv.addr, 'GET', '', 'since=0&timeout=0',
                           script_name='/lp/holdfast.fcgi',
                           extra={'REQUEST_URI': '/lp/holdfast.fcgi/sub/news?since=0&timeout=0'})
        self.assertEqual(st, 200, b)
        self.assertEqual(len(json.loads(b)['messages']), 1)


# =============================================================================
# behind lighttpd
# =============================================================================

@unittest.skipUnless(hfutil.lighttpd_available(), 'no lighttpd')
class LighttpdTest(HoldfastTest):

    def through(self, lt, stats_addr=None):
        st, h, b = lt.http('GET', '/hf/health')
        self.assertEqual((st, b), (200, b'ok\n'), lt.read_logs())
        st, h, b = lt.http('POST', '/hf/pub/x', b'over http', {'Content-Type': 'text/plain'})
        self.assertEqual(st, 201, b)
        mid = json.loads(b)['id']
        st, h, b = lt.http('GET', '/hf/sub/x?since=%d&timeout=2' % (mid - 1))
        self.assertEqual(st, 200, b)
        self.assertEqual(h.get('cache-control'), 'no-store')
        j = json.loads(b)
        self.assertEqual([(m['id'], m['data']) for m in j['messages']], [(mid, 'over http')])
        # a parked HTTP subscriber woken by an HTTP publish
        res = {}
        t = threading.Thread(target=lambda: res.update(
            a=lt.http('GET', '/hf/sub/x?since=%d&timeout=20' % mid, timeout=25)))
        t.start()
        try:
            wait_for(lambda: json.loads(lt.http('GET', '/hf/stats')[2])['parked'] == 1
                     if stats_addr is None else stats(stats_addr)['parked'] == 1,
                     10, what='HTTP subscriber parked')
            t0 = time.monotonic()
            st, h, b = lt.http('POST', '/hf/pub/x', b'wake', {'Content-Type': 'text/plain'})
            self.assertEqual(st, 201, b)
            mid2 = json.loads(b)['id']
        finally:
            t.join(10)
        self.assertFalse(t.is_alive(), 'the HTTP long poll was not answered')
        took = time.monotonic() - t0
        st, h, b = res['a']
        self.assertEqual(st, 200, b)
        self.assertEqual([m['id'] for m in json.loads(b)['messages']], [mid2])
        self.assertLess(took, 2)
        # errors pass through with their status
        st, h, b = lt.http('GET', '/hf/sub/bad!')
        self.assertErrorAnswer((st, h, b), 400, 'bad_channel')

    def test_14a_lighttpd_spawning_holdfast_publish_long_poll_and_wake(self):
        lt = self.lighttpd('spawn', db=self.db, warm=True)
        self.through(lt)
        self.assertTrue(lt.known_pids - {lt.proc.pid}, 'lighttpd spawned no holdfast')
        lt.stop()

    def test_14b_lighttpd_to_holdfast_serve_socket_publish_long_poll_and_wake(self):
        srv = self.serve(workers=1, warm=True)
        lt = self.lighttpd('socket', socket_path=srv.sock)
        self.through(lt, stats_addr=srv.addr)
        lt.stop()
        srv.stop()


if __name__ == '__main__':
    unittest.main()
