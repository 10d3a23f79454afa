"""The connection path and storage faults, against a real `holdfast serve`.

Each test is the regression test of a defect found in the reliability issue:
it failed on the code before the fix (the reason is in its docstring).
"""
import json
import os
import socket
import sqlite3
import struct
import threading
import time
import unittest

import hfutil
from hfutil import (FcgiParser, HoldfastServer, fcgi_connect, fcgi_encode_request, fcgi_nv,
                    fcgi_record, fcgi_stream, parse_cgi_response, publish, request, stats)

FCGI_BEGIN_REQUEST, FCGI_PARAMS, FCGI_STDIN = 1, 4, 5


def read_answer(s, timeout=15):
    """Read one FastCGI answer from socket s: (status, headers, body)."""
    deadline = time.monotonic() + timeout
    p = FcgiParser()
    while not p.done:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout('no answer within %.1fs' % timeout)
        s.settimeout(left)
        data = s.recv(65536)
        if not data:
            raise hfutil.FcgiError('closed before END_REQUEST')
        p.feed(data)
    return parse_cgi_response(p.stdout)


def begin(reqid=1):
    return fcgi_record(FCGI_BEGIN_REQUEST, reqid, struct.pack('>HB5x', 1, 0))


class ServerCase(unittest.TestCase):
    """A test with its own directory and `holdfast serve` (serve())."""

    def setUp(self):
        self.tmp = hfutil.make_tmpdir('hf-conn-')
        self.addCleanup(hfutil.remove_tmpdir, self.tmp)
        self.db = os.path.join(self.tmp, 'hf.db')

    def serve(self, config=None, threads=None, wait=True, workers=1):
        srv = HoldfastServer(self.tmp, workers=workers, config=config, db=self.db,
                             threads=threads)
        self.addCleanup(srv.kill)
        srv.start(wait=wait)
        self.srv = srv
        return srv

    def connect(self):
        s = fcgi_connect(self.srv.addr)
        self.addCleanup(s.close)
        return s

    def assertStatus(self, answer, status, error=None):
        st, h, b = answer
        self.assertEqual(st, status, b)
        if error:
            self.assertEqual(json.loads(b)['error'], error, b)
        return json.loads(b) if b and h.get('content-type') == 'application/json' else b


class ConnTest(ServerCase):

    # ---- one path from accept to close ----------------------------------

    def test_20a_protocol_error_closes_only_its_connection_and_the_next_is_answered(self):
        """libfcgi, on a protocol error inside FCGX_Accept_r, closed the fd and
        accepted the next connection itself, which holdfast's thread never
        answered (one thread): the second client hung."""
        self.serve(threads=1)
        bad = self.connect()
        good = self.connect()
        bad.sendall(b'\x02' + b'\x00' * 15)  # FastCGI version 2: not ours
        good.sendall(fcgi_encode_request('GET', '/health'))
        self.assertEqual(read_answer(good, timeout=1.0)[0], 200)  # libfcgi: 2 s or never
        bad.settimeout(3)
        self.assertEqual(bad.recv(100), b'')  # closed, nothing written to it

    def test_20b_one_deadline_per_request_not_per_read(self):
        """A peer trickling a byte every 0.5 s was never timed out (10 s per
        read): with one thread, it held the worker as long as it liked.  Now
        the request gets 408 10 s after its connection was accepted."""
        self.serve(threads=1)
        s = self.connect()
        t0 = time.monotonic()
        s.sendall(begin())
        params = fcgi_nv('REQUEST_METHOD', 'GET') + fcgi_nv('PATH_INFO', '/health')
        data = fcgi_record(FCGI_PARAMS, 1, params)
        closed = threading.Event()

        def trickle():
            for ch in data:
                if closed.is_set() or time.monotonic() - t0 > 25:
                    return
                try:
                    s.send(bytes([ch]))
                except OSError:
                    return
                time.sleep(0.5)
        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        self.addCleanup(closed.set)
        answer = read_answer(s, timeout=20)
        took = time.monotonic() - t0
        closed.set()
        self.assertStatus(answer, 408, 'request_timeout')
        self.assertLess(took, 12.5)
        self.assertGreater(took, 9.0)
        # and the one thread serves again
        self.assertEqual(request(self.srv.addr, 'GET', '/health', timeout=5)[0], 200)

    def test_20b2_slow_uploads_do_not_take_every_thread(self):
        """Behind a streaming front (mod_proxy_fcgi), eight slow uploads held
        every accepting thread of a 2x4 pool: /health waited until they timed
        out.  Now a request not whole within 50 ms waits in the dispatcher."""
        srv = self.serve(threads=2)
        socks = []
        head = begin() + fcgi_stream(FCGI_PARAMS, 1, b''.join(
            fcgi_nv(k, v) for k, v in hfutil.cgi_params('POST', '/pub/slow', body=b'x' * 20
                                                         ).items()))
        for _ in range(12):
            s = self.connect()
            s.sendall(head + fcgi_record(FCGI_STDIN, 1, b'x'))  # 1 of 20 bytes
            socks.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        self.assertEqual(request(srv.addr, 'GET', '/health', timeout=5)[0], 200)
        self.assertLess(time.monotonic() - t0, 0.5)
        for s in socks:  # the rest of each body, then each is answered
            s.sendall(fcgi_record(FCGI_STDIN, 1, b'x' * 19) + fcgi_record(FCGI_STDIN, 1, b''))
        for s in socks:
            self.assertEqual(read_answer(s, timeout=5)[0], 201)
        self.assertEqual(stats(srv.addr)['head'], 12)

    def test_20c_body_refused_unread_is_answered_413_and_drained_not_reset(self):
        """Answering 413 and closing with the body still unread made the
        kernel send RST, and the web server lost the answer (nginx: 502)."""
        self.serve(config={'max_body': '64k'})
        s = self.connect()
        body = b'x' * (4 << 20)
        s.sendall(fcgi_encode_request('POST', '/pub/big', body=body))  # all of it
        answer = read_answer(s, timeout=15)
        self.assertStatus(answer, 413, 'body_too_large')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        self.assertEqual(s.recv(100), b'')  # an orderly close after the drain

    def test_20d_params_over_64k_are_431(self):
        self.serve()
        s = self.connect()
        big = fcgi_nv('HTTP_X_BIG', 'y' * 70000)
        s.sendall(begin() + fcgi_stream(FCGI_PARAMS, 1, fcgi_nv('REQUEST_METHOD', 'GET') +
                                        fcgi_nv('PATH_INFO', '/health') + big) +
                  fcgi_stream(FCGI_STDIN, 1, b''))
        self.assertStatus(read_answer(s), 431, 'headers_too_large')

    def test_20e_get_values_is_answered_and_the_connection_then_serves(self):
        self.serve()
        s = self.connect()
        s.sendall(fcgi_record(9, 0, fcgi_nv('FCGI_MPXS_CONNS', '')))
        s.settimeout(5)
        data = s.recv(100)
        self.assertEqual(data[1], 10)  # FCGI_GET_VALUES_RESULT
        self.assertIn(b'FCGI_MPXS_CONNS0', data)
        s.sendall(fcgi_encode_request('GET', '/health'))
        self.assertEqual(read_answer(s)[0], 200)

    # ---- storage faults ----------------------------------------------------

    def test_21a_unopenable_wake_file_is_503_not_a_crash_loop_and_recovers(self):
        """When wake_open failed, handler_open left h->log dangling and the
        worker freed it twice: every worker died at start, over and over.
        Now the worker serves 503 with the reason, and recovers by itself."""
        os.mkdir(self.db + '-wake')  # cannot be opened as a file
        srv = self.serve(wait=False)
        deadline = time.monotonic() + 10
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = request(srv.addr, 'POST', '/pub/news', body=b'x', timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        st, h, b = answer
        self.assertEqual(st, 503, b)
        self.assertEqual(json.loads(b)['error'], 'unavailable')
        self.assertIn('wake', json.loads(b)['detail'])
        self.assertEqual(h.get('retry-after'), '1')
        pids = srv.worker_pids()
        time.sleep(1.5)
        self.assertEqual(srv.worker_pids(), pids, 'workers were replaced: they crashed')
        os.rmdir(self.db + '-wake')
        hfutil.wait_for(lambda: publish(srv.addr, 'news', 'back')[0] == 201, 5,
                        what='publishing again once the wake file can be made')
        j = json.loads(request(srv.addr, 'GET', '/sub/news', 'since=0&timeout=0')[2])
        self.assertEqual([m['data'] for m in j['messages']], ['back'])
        self.assertNotIn('killed by signal', srv.read_log())

    def test_21b_read_only_database_at_start_is_503_until_it_is_writable(self):
        """A worker that could not open the log exited, and was replaced in a
        loop; now it serves 503 with the reason until the file is writable."""
        with open(self.db, 'wb'):
            pass
        os.chmod(self.db, 0o444)  # msglog refuses a file without write bits
        srv = self.serve(wait=False)
        hfutil.wait_for(lambda: os.path.exists(srv.sock), 10, what='socket')
        st, h, b = request(srv.addr, 'GET', '/health', timeout=5)
        self.assertEqual(st, 503, b)
        self.assertIn('read-only', json.loads(b)['detail'])
        os.chmod(self.db, 0o644)
        hfutil.wait_for(lambda: request(srv.addr, 'GET', '/health', timeout=5)[0] == 200, 5,
                        what='/health once the file is writable')
        self.assertNotIn('exited with', srv.read_log())

    def test_21c_removed_database_is_seen_by_health_and_stats(self):
        """/health said ok and /stats gave the old head and epoch after the
        database files were removed; now both look at the file at `db`."""
        srv = self.serve()
        self.assertEqual(publish(srv.addr, 'news', 'one')[0], 201)
        old = stats(srv.addr)
        for suffix in ('', '-wal', '-shm'):
            if os.path.exists(self.db + suffix):
                os.unlink(self.db + suffix)
        new = stats(srv.addr)
        self.assertNotEqual(new['epoch'], old['epoch'])
        self.assertEqual(new['head'], 0)

    def test_21d_external_write_lock_gives_each_publish_503_in_time_and_health_stays_prompt(self):
        """With BEGIN EXCLUSIVE held by another process, publishes queued on
        the per-process write mutex and got their 503s one busy timeout after
        another (5, 10, 15, 20 s), and /health waited behind them."""
        srv = self.serve(config={'busy_timeout_ms': '2000'}, threads=4)
        self.assertEqual(publish(srv.addr, 'news', 'first')[0], 201)
        con = sqlite3.connect(self.db, timeout=5, isolation_level=None)
        self.addCleanup(con.close)
        con.execute('BEGIN EXCLUSIVE')
        results = []

        def one():
            t0 = time.monotonic()
            try:
                st = publish(srv.addr, 'news', 'x', timeout=15)[0]
            except OSError as e:
                st = repr(e)
            results.append((st, time.monotonic() - t0))
        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        st = request(srv.addr, 'GET', '/health', timeout=5)[0]
        health = time.monotonic() - t0
        for t in threads:
            t.join(20)
        con.execute('ROLLBACK')
        self.assertEqual(st, 200)
        self.assertLess(health, 1.5, 'health waited behind stuck publishes')
        self.assertEqual(len(results), 12)
        for st, took in results:
            self.assertEqual(st, 503, results)
            self.assertLess(took, 3.8, results)  # before: 2, 4, 6 s (one after another)
        self.assertEqual(publish(srv.addr, 'news', 'after')[0], 201)


    def test_21e_corrupt_database_is_503_with_the_reason_and_untouched(self):
        with open(self.db, 'wb') as f:
            f.write(b'this is not a database' * 100)
        before = open(self.db, 'rb').read()
        srv = self.serve(wait=False)
        hfutil.wait_for(lambda: os.path.exists(srv.sock), 10, what='socket')
        self.assertEqual(publish(srv.addr, 'news', 'x')[0], 503)
        st, h, b = request(srv.addr, 'GET', '/health', timeout=5)
        self.assertEqual(st, 503, b)
        self.assertIn('not an SQLite database', json.loads(b)['detail'])
        self.assertEqual(open(self.db, 'rb').read(), before)
        pids = srv.worker_pids()
        time.sleep(1.2)
        self.assertEqual(srv.worker_pids(), pids)

    def test_21f_directory_removed_while_serving_is_503_then_resumes_when_recreated(self):
        sub = os.path.join(self.tmp, 'data')
        os.mkdir(sub)
        self.db = os.path.join(sub, 'hf.db')
        srv = self.serve()
        self.assertEqual(publish(srv.addr, 'news', 'one')[0], 201)
        pids = srv.worker_pids()
        for name in os.listdir(sub):
            os.unlink(os.path.join(sub, name))
        os.rmdir(sub)
        st, j = publish(srv.addr, 'news', 'lost?')
        self.assertEqual(st, 503, j)
        self.assertEqual(request(srv.addr, 'GET', '/health', timeout=5)[0], 503)
        os.mkdir(sub)
        hfutil.wait_for(lambda: publish(srv.addr, 'news', 'two')[0] == 201, 5,
                        what='publishing into the recreated directory')
        self.assertEqual(srv.worker_pids(), pids, 'no worker was lost')

    @unittest.skipUnless(os.geteuid() == 0, 'mounting a tmpfs needs root (CI runs as root)')
    def test_21g_full_disk_is_503_nothing_acked_is_lost_and_service_resumes(self):
        mnt = os.path.join(self.tmp, 'small')
        os.mkdir(mnt)
        if os.system('mount -t tmpfs -o size=4m tmpfs %s' % mnt) != 0:
            self.fail('cannot mount a tmpfs at %s' % mnt)
        self.addCleanup(os.system, 'umount -l %s' % mnt)
        self.db = os.path.join(mnt, 'hf.db')
        srv = self.serve(config={'max_body': '1m'})
        acked = []
        filler = os.path.join(mnt, 'filler')
        with open(filler, 'wb') as f:
            try:
                while True:
                    f.write(b'\0' * 65536)
                    f.flush()
            except OSError:
                pass
        codes = set()
        for i in range(20):
            st, j = publish(srv.addr, 'news', 'm%d' % i + 'z' * 50000)
            codes.add(st)
            if st == 201:
                acked.append(j['id'])
        self.assertIn(503, codes)
        self.assertTrue(codes <= {201, 503}, codes)
        st, h, b = request(srv.addr, 'GET', '/stats', timeout=5)
        self.assertIn(st, (200, 503))  # never a crash (SIGBUS on the wake file)
        os.unlink(filler)
        hfutil.wait_for(lambda: publish(srv.addr, 'news', 'after')[0] == 201, 5,
                        what='publishing once there is room again')
        j = json.loads(request(srv.addr, 'GET', '/sub/news', 'since=0&timeout=0')[2])
        ids = [m['id'] for m in j['messages']]
        self.assertTrue(set(acked) <= set(ids), (acked, ids))
        self.assertNotIn('killed by signal', srv.read_log())


    # ---- publishing rules at the HTTP surface --------------------------------

    def test_22a_idempotent_retry_after_compaction_is_200_with_the_original_id(self):
        """The retry of a compacted message published again (201, new id) and
        made the stale value the channel's current one."""
        srv = self.serve()
        h1 = {'Holdfast-Key': 'X', 'Idempotency-Key': 'R1'}
        st, j1 = publish(srv.addr, 'news', 'v1', h1)
        self.assertEqual(st, 201)
        self.assertEqual(publish(srv.addr, 'news', 'v2', {'Holdfast-Key': 'X',
                                                           'Idempotency-Key': 'R2'})[0], 201)
        st, j = publish(srv.addr, 'news', 'v1', h1)
        self.assertEqual((st, j['id']), (200, j1['id']))
        j = json.loads(request(srv.addr, 'GET', '/sub/news', 'since=0&timeout=0')[2])
        self.assertEqual([m['data'] for m in j['messages']], ['v2'])
        st, j = publish(srv.addr, 'news', 'something else', h1)
        self.assertEqual(st, 422, j)
        self.assertEqual(j['error'], 'idempotency_key_reused')

    def test_22b_a_poison_content_type_is_refused_at_publish(self):
        srv = self.serve()
        st, j = publish(srv.addr, 'news', 'x', {'Content-Type': 'text/plain; x=' + 'a' * 6000})
        self.assertEqual((st, j['error']), (400, 'bad_content_type'))
        self.assertEqual(publish(srv.addr, 'news', 'x', {'Content-Type': 'text/plain'})[0], 201)

    def test_22d_publishes_committed_together_are_each_answered_as_if_alone(self):
        """THE GROUP COMMIT: publishes queued while another program holds
        the write lock go into one transaction.  A reused idempotency key
        among them costs only its own publish a 422; a retry with the same
        key and body is a 200 with the first one's id; every 201 is in the
        log, once, in the order of its id."""
        srv = self.serve(config={'busy_timeout_ms': '5000'}, threads=8)
        self.assertEqual(publish(srv.addr, 'news', 'first')[0], 201)
        con = sqlite3.connect(self.db, timeout=5, isolation_level=None)
        self.addCleanup(con.close)
        con.execute('BEGIN IMMEDIATE')
        sends = [('lead', {}), ('a', {'Idempotency-Key': 'K1'}), ('b', {'Idempotency-Key': 'K1'}),
                 ('same', {'Idempotency-Key': 'K2'}), ('same', {'Idempotency-Key': 'K2'}),
                 ('plain', {})]
        results = [None] * len(sends)

        def one(i):
            body, h = sends[i]
            try:
                results[i] = publish(srv.addr, 'news', body, h, timeout=15)
            except OSError as e:
                results[i] = (repr(e), None)
        threads = [threading.Thread(target=one, args=(0,))]
        threads[0].start()
        time.sleep(0.2)  # the leader waits in SQLite; the rest queue behind it
        for i in range(1, len(sends)):
            threads.append(threading.Thread(target=one, args=(i,)))
            threads[-1].start()
        time.sleep(0.5)
        con.execute('ROLLBACK')
        for t in threads:
            t.join(20)
        st = [r[0] for r in results]
        self.assertEqual(st[0], 201, results)
        self.assertEqual(st[5], 201, results)
        self.assertEqual(sorted(st[1:3]), [201, 422], results)
        reused = results[1 + st[1:3].index(422)][1]
        self.assertEqual(reused['error'], 'idempotency_key_reused', reused)
        winner = sends[1 + st[1:3].index(201)][0]
        self.assertEqual(sorted(st[3:5]), [200, 201], results)
        self.assertEqual(results[3][1]['id'], results[4][1]['id'], results)
        acked = {r[1]['id'] for r in results if r[0] in (200, 201)}
        j = json.loads(request(srv.addr, 'GET', '/sub/news', 'since=0&timeout=0')[2])
        got = [(m['id'], m['data']) for m in j['messages']]
        self.assertEqual([i for i, _ in got], sorted(i for i, _ in got))
        self.assertEqual({i for i, _ in got}, acked | {got[0][0]}, got)
        self.assertEqual(sorted(d for _, d in got), sorted(['first', 'lead', winner, 'same',
                                                             'plain']), got)
        self.assertEqual(publish(srv.addr, 'news', 'after')[0], 201)

    def test_22c_stats_report_the_durability_sqlite_applies(self):
        srv = self.serve()
        self.assertEqual(stats(srv.addr)['durability'], 'normal')
        srv.stop()
        srv = self.serve(config={'durability': 'full'})
        self.assertEqual(stats(srv.addr)['durability'], 'full')


if __name__ == '__main__':
    unittest.main()


class KeptConnTest(ServerCase):
    """FCGI_KEEP_CONN (nginx fastcgi_keep_conn on, Apache enablereuse=on):
    a kept connection carries request after request, and every guarantee
    holds on it (KEPT CONNECTIONS in worker.c, THE INLINE RULE in
    fcgi_front.c, THE SETTLED HINT in handler.h)."""

    def ask(self, s, method, path, query='', body=b'', headers=None, timeout=15):
        s.sendall(fcgi_encode_request(method, path, query, headers, body, keep_conn=True))
        return read_answer(s, timeout)

    def assertOpen(self, s):
        """The connection is still open: nothing to read, no EOF."""
        s.setblocking(False)
        try:
            self.assertRaises(BlockingIOError, s.recv, 1)
        finally:
            s.setblocking(True)

    def test_23a_one_connection_carries_every_kind_of_request(self):
        srv = self.serve()
        s = self.connect()
        self.assertStatus(self.ask(s, 'GET', '/health'), 200)
        self.assertOpen(s)
        j = self.assertStatus(self.ask(s, 'POST', '/pub/news', body=b'one'), 201)
        reset = self.assertStatus(self.ask(s, 'GET', '/sub/news',
                                           'since=0&epoch=0123456789abcdef&timeout=0'), 200)
        self.assertTrue(reset['reset'], reset)
        # at the head but of another epoch: a reset at once, not a wait
        t0 = time.monotonic()
        reset = self.assertStatus(self.ask(s, 'GET', '/sub/news', 'since=%d&epoch=0123456789abcdef'
                                           '&timeout=5' % j['id']), 200)
        self.assertTrue(reset['reset'], reset)
        self.assertLess(time.monotonic() - t0, 2)
        got = self.assertStatus(self.ask(s, 'GET', '/sub/news', 'since=0&timeout=0'), 200)
        self.assertEqual([m['data'] for m in got['messages']], ['one'])
        # a poll that waits on the kept connection, woken by a publish elsewhere
        s.sendall(fcgi_encode_request('GET', '/sub/news', 'since=%d&epoch=%s&timeout=20' % (
            got['cursor'], got['epoch']), keep_conn=True))
        time.sleep(0.3)
        self.assertEqual(publish(srv.addr, 'news', 'two')[0], 201)
        got = self.assertStatus(read_answer(s, 10), 200)
        self.assertEqual([m['data'] for m in got['messages']], ['two'])
        self.assertGreater(got['cursor'], j['id'])
        # a refusal, then a timeout answer, and the connection still serves
        self.assertStatus(self.ask(s, 'GET', '/sub/bad!name', 'timeout=0'), 400, 'bad_channel')
        t0 = time.monotonic()
        empty = self.assertStatus(self.ask(s, 'GET', '/sub/news', 'since=%d&epoch=%s&timeout=1'
                                           % (got['cursor'], got['epoch'])), 200)
        self.assertEqual((empty['messages'], empty['cursor']), ([], got['cursor']))
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertStatus(self.ask(s, 'GET', '/stats'), 200)
        self.assertOpen(s)

    def test_23b_without_keep_conn_the_connection_is_closed_after_the_answer(self):
        self.serve()
        s = self.connect()
        s.sendall(fcgi_encode_request('GET', '/health'))
        self.assertEqual(read_answer(s)[0], 200)
        s.settimeout(5)
        self.assertEqual(s.recv(100), b'')

    def test_23c_a_body_refused_unread_on_a_kept_connection_is_drained_and_closed(self):
        """Its unread rest would be taken for the next request."""
        self.serve(config={'max_body': '64k'})
        s = self.connect()
        s.sendall(fcgi_encode_request('POST', '/pub/big', body=b'x' * (1 << 20), keep_conn=True))
        self.assertStatus(read_answer(s), 413, 'body_too_large')
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        self.assertEqual(s.recv(100), b'')

    def test_23d_a_client_that_leaves_while_parked_or_idle_is_forgotten(self):
        srv = self.serve()
        conns = []
        for _ in range(20):
            s = fcgi_connect(srv.addr)
            self.addCleanup(s.close)
            self.assertStatus(self.ask(s, 'GET', '/health'), 200)  # now kept and idle
            conns.append(s)
        for s in conns[:10]:
            s.sendall(fcgi_encode_request('GET', '/sub/gone', 'timeout=30', keep_conn=True))
        hfutil.wait_for(lambda: stats(srv.addr)['parked'] == 10, 10, what='10 parked')
        for s in conns:
            s.close()
        hfutil.wait_for(lambda: stats(srv.addr)['parked'] == 0, 10, what='none parked')
        fds = len(os.listdir('/proc/%d/fd' % srv.worker_pids()[0]))
        s = self.connect()
        self.assertStatus(self.ask(s, 'GET', '/health'), 200)
        self.assertLess(fds, 40, 'closed kept connections still hold descriptors')

    def test_23e_exactly_once_in_order_while_publishes_race_the_re_polls(self):
        """Re-polls on kept connections are answered on the dispatcher and
        park without a read when at its processed head: a message committed
        meanwhile must still reach every subscriber, once, in order."""
        srv = self.serve()
        n_subs, n_msgs = 12, 60
        subs = []
        for _ in range(n_subs):
            s = fcgi_connect(srv.addr, timeout=20)
            self.addCleanup(s.close)
            subs.append({'s': s, 'q': 'timeout=20', 'got': []})
        for sub in subs:
            sub['s'].sendall(fcgi_encode_request('GET', '/sub/race', sub['q'], keep_conn=True))
        hfutil.wait_for(lambda: stats(srv.addr)['parked'] == n_subs, 10, what='all parked')

        def publisher():
            p = fcgi_connect(srv.addr)
            try:
                for i in range(n_msgs):
                    p.sendall(fcgi_encode_request('POST', '/pub/race', body=b'%d' % i,
                                                  keep_conn=True))
                    assert read_answer(p)[0] == 201
                    if i % 7 == 0:
                        time.sleep(0.002)
            finally:
                p.close()

        th = threading.Thread(target=publisher)
        th.start()
        deadline = time.monotonic() + 30
        while any(len(sub['got']) < n_msgs for sub in subs) and time.monotonic() < deadline:
            for sub in subs:
                if len(sub['got']) >= n_msgs:
                    continue
                j = self.assertStatus(read_answer(sub['s'], 20), 200)
                sub['got'] += [int(m['data']) for m in j['messages']]
                sub['s'].sendall(fcgi_encode_request(
                    'GET', '/sub/race', 'since=%d&epoch=%s&timeout=20' % (j['cursor'], j['epoch']),
                    keep_conn=True))
        th.join(30)
        for sub in subs:
            self.assertEqual(sub['got'], list(range(n_msgs)))

    def test_23f_a_stop_closes_idle_kept_connections_and_exits(self):
        srv = self.serve()
        s = self.connect()
        self.assertStatus(self.ask(s, 'GET', '/health'), 200)
        srv.stop()
        s.settimeout(5)
        self.assertEqual(s.recv(100), b'')
