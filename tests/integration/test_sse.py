"""Server-Sent Events on GET /sub: `Accept: text/event-stream`, against a real
`holdfast serve` (and the CGI front), read as the web server would read it.
"""
import json
import os
import socket
import subprocess
import time
import unittest

import hfutil
from hfutil import (FcgiParser, HoldfastServer, fcgi_connect, fcgi_encode_request, publish,
                    stats)

SSE = {'Accept': 'text/event-stream'}


def parse_events(text):
    """SSE text -> list of dicts (id, event, data, comment) as EventSource sees
    them; a field-less block of comments is kept as {'comment': [...]}."""
    events = []
    for block in text.replace('\r\n', '\n').split('\n\n'):
        if not block:
            continue
        ev = {}
        for line in block.split('\n'):
            if line.startswith(':'):
                ev.setdefault('comment', []).append(line[1:].strip())
                continue
            name, _, value = line.partition(':')
            value = value[1:] if value.startswith(' ') else value
            if name == 'data':
                ev['data'] = ev['data'] + '\n' + value if 'data' in ev else value
            else:
                ev[name] = value
        events.append(ev)
    return events


class Stream:
    """One event stream over FastCGI: the head, then events as they come."""

    def __init__(self, addr, path, query='', headers=None, keep_conn=False):
        self.sock = fcgi_connect(addr)
        self.sock.sendall(fcgi_encode_request('GET', path, query, dict(SSE, **(headers or {})),
                                              keep_conn=keep_conn))
        self.p = FcgiParser()
        self.head = None
        self.text = ''
        self.closed = False

    def pump(self, timeout):
        """Read what arrives within timeout (s); False once the connection closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        if not data:
            self.closed = True
            return False
        self.p.feed(data)
        out = self.p.stdout
        if self.head is None:
            sep = out.find(b'\r\n\r\n')
            if sep < 0:
                return True
            self.head = {}
            for line in out[:sep].decode('latin-1').split('\r\n'):
                k, _, v = line.partition(':')
                self.head[k.strip().lower()] = v.strip()
            self.p.stdout = out = out[sep + 4:]
        self.text = out.decode()
        return True

    def events(self):
        return parse_events(self.text[:self.text.rfind('\n\n') + 2] if '\n\n' in self.text
                            else '')

    def messages(self):
        return [e for e in self.events() if 'id' in e]

    def wait(self, pred, timeout=10, what='events'):
        deadline = time.monotonic() + timeout
        while not pred(self):
            left = deadline - time.monotonic()
            if left <= 0 or (not self.pump(min(left, 0.5)) and not pred(self)):
                raise AssertionError('%s: not within %ss; got %r (done=%s)' %
                                     (what, timeout, self.text[-500:], self.p.done))
        return self

    def close(self):
        self.sock.close()


class SseCase(unittest.TestCase):

    def setUp(self):
        self.tmp = hfutil.make_tmpdir('hf-sse-')
        self.addCleanup(hfutil.remove_tmpdir, self.tmp)

    def serve(self, config=None, workers=1):
        srv = HoldfastServer(self.tmp, workers=workers, config=config)
        self.addCleanup(srv.kill)
        srv.start()
        self.srv = srv
        return srv

    def stream(self, path='/sub/news', query='', headers=None, keep_conn=False):
        s = Stream(self.srv.addr, path, query, headers, keep_conn)
        self.addCleanup(s.close)
        s.wait(lambda s: s.head is not None, what='the head')
        return s

    def pub(self, channel, data):
        st, body = publish(self.srv.addr, channel, data)
        self.assertEqual(st, 201, body)
        return body['id']

    def ids(self, s):
        return [int(e['id']) for e in s.messages()]

    def test_s01_head_says_event_stream_and_nothing_ends_it(self):
        self.serve()
        s = self.stream()
        self.assertEqual(s.head['status'], '200 OK')
        self.assertEqual(s.head['content-type'], 'text/event-stream')
        self.assertEqual(s.head['x-accel-buffering'], 'no')
        self.assertEqual(s.head['cache-control'], 'no-store')
        self.assertNotIn('content-length', s.head)
        s.wait(lambda s: 'retry: 1000\n\n' in s.text, what='retry line')
        s.pump(1)
        self.assertFalse(s.p.done, 'a stream must not end on its own before sse_max')
        self.assertEqual(stats(self.srv.addr)['parked'], 1)

    def test_s02_each_message_is_one_event_with_its_id_and_the_message_object(self):
        self.serve()
        s = self.stream()
        sent = []
        for i in range(3):
            t0 = time.monotonic()
            sent.append(self.pub('news', 'm%d' % i))
            s.wait(lambda s: len(s.messages()) == i + 1, 5, 'event %d' % i)
            self.assertLess(time.monotonic() - t0, 3, 'an event must leave at once')
        self.assertEqual(self.ids(s), sent)
        obj = json.loads(s.messages()[1]['data'])
        self.assertEqual((obj['id'], obj['channel'], obj['data']), (sent[1], 'news', 'm1'))
        self.assertFalse(s.p.done)
        st = stats(self.srv.addr)
        self.assertEqual((st['parked'], st['deliveries']), (1, 3))

    def test_s03_last_event_id_resumes_after_it_exactly_once(self):
        self.serve()
        ids = [self.pub('news', 'm%d' % i) for i in range(5)]
        s = self.stream(headers={'Last-Event-ID': str(ids[1])})
        s.wait(lambda s: len(s.messages()) >= 3)
        more = self.pub('news', 'late')
        s.wait(lambda s: len(s.messages()) >= 4)
        s.pump(0.3)
        self.assertEqual(self.ids(s), ids[2:] + [more])
        # on a stream Last-Event-ID wins over ?since=: EventSource reconnects
        # to the same URL, so its since= is the first cursor, not the last
        s2 = self.stream(query='since=0', headers={'Last-Event-ID': str(ids[3])})
        s2.wait(lambda s: len(s.messages()) >= 2)
        s2.pump(0.3)
        self.assertEqual(self.ids(s2), [ids[4], more])

    def test_s04_no_cursor_starts_at_the_head_and_last_n_starts_before_it(self):
        self.serve()
        old = [self.pub('news', 'old%d' % i) for i in range(4)]
        s = self.stream()
        s2 = self.stream(query='last=2')
        new = self.pub('news', 'new')
        s.wait(lambda s: len(s.messages()) >= 1)
        s2.wait(lambda s: len(s.messages()) >= 3)
        s.pump(0.3)
        self.assertEqual(self.ids(s), [new])
        self.assertEqual(self.ids(s2), old[2:] + [new])

    def test_s05_a_backlog_past_batch_limit_arrives_whole_and_in_order(self):
        self.serve(config={'batch_limit': 7})
        ids = [self.pub('news', 'x' * 100 + str(i)) for i in range(60)]
        s = self.stream(query='since=0')
        s.wait(lambda s: len(s.messages()) >= 60, 15)
        self.assertEqual(self.ids(s), ids)

    def test_s06_pings_when_idle_and_ends_after_sse_max_for_the_browser_to_reconnect(self):
        self.serve(config={'sse_ping': 1, 'sse_max': 3})
        s = self.stream()
        t0 = time.monotonic()
        s.wait(lambda s: any('ping' in e.get('comment', []) for e in s.events()), 4, 'a ping')
        self.assertGreater(time.monotonic() - t0, 0.5)
        s.wait(lambda s: s.p.done, 6, 'the end of the stream')
        self.assertEqual(s.p.app_status, 0)
        self.assertGreater(time.monotonic() - t0, 2.5)
        hfutil.wait_for(lambda: stats(self.srv.addr)['parked'] == 0, 5, what='unparked')

    def test_s07_a_client_that_leaves_is_let_go(self):
        self.serve()
        s = self.stream()
        hfutil.wait_for(lambda: stats(self.srv.addr)['parked'] == 1, 5, what='parked')
        s.close()
        hfutil.wait_for(lambda: stats(self.srv.addr)['parked'] == 0, 5, what='let go')
        hfutil.wait_for(lambda: stats(self.srv.addr)['left'] == 1, 5, what='counted as left')

    def test_s08_a_consumer_that_takes_nothing_is_dropped_and_loses_nothing(self):
        """The stream's queue is bounded: a client that stops reading is let
        go after a ping interval with no progress; it resumes from its last
        event and every message is still there."""
        self.serve(config={'sse_ping': 1, 'sse_queue_max': 4096, 'max_body': 1 << 20})
        s = self.stream()
        s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = 'y' * 200000
        ids = [self.pub('news', big) for _ in range(20)]  # far beyond socket buffers
        hfutil.wait_for(lambda: stats(self.srv.addr)['parked'] == 0, 10, what='dropped')
        self.assertIn('took none of its', self.srv.read_log())
        r = self.stream(query='since=0')
        r.wait(lambda s: len(s.messages()) >= 20, 20)
        self.assertEqual(self.ids(r), ids)

    def test_s09_many_streams_on_one_channel_share_the_read_and_all_get_everything(self):
        self.serve()
        streams = [self.stream() for _ in range(50)]
        ids = [self.pub('news', 'm%d' % i) for i in range(10)]
        for s in streams:
            s.wait(lambda s: len(s.messages()) >= 10)
            self.assertEqual(self.ids(s), ids)

    def test_s10_multi_line_json_arrives_as_the_same_value(self):
        self.serve()
        s = self.stream()
        body = '{\n  "a": [1,\r\n 2],\r  "b": "x"\n}\n'
        st, b = publish(self.srv.addr, 'news', body,
                           headers={'Content-Type': 'application/json'})
        self.assertEqual(st, 201, b)
        s.wait(lambda s: len(s.messages()) >= 1)
        self.assertEqual(json.loads(s.messages()[0]['data'])['data'], {'a': [1, 2], 'b': 'x'})

    def test_s11_stopping_the_server_ends_streams_cleanly(self):
        srv = self.serve()
        s = self.stream()
        hfutil.wait_for(lambda: stats(self.srv.addr)['parked'] == 1, 5, what='parked')
        srv.stop()
        s.wait(lambda s: s.p.done or s.closed, 10, 'the end')
        self.assertTrue(s.p.done, 'the stream ends with END_REQUEST, not a reset')

    def test_s12_kept_connection_serves_the_next_request_after_the_stream_ends(self):
        self.serve(config={'sse_max': 1})
        s = self.stream(keep_conn=True)
        s.wait(lambda s: s.p.done, 5, 'the end')
        s.sock.sendall(fcgi_encode_request('GET', '/health', reqid=2, keep_conn=True))
        p = FcgiParser()
        s.sock.settimeout(5)
        while not p.done:
            p.feed(s.sock.recv(65536))
        self.assertIn(b'ok', p.stdout)

    def test_s13_refused_streams_get_the_usual_answers(self):
        self.serve(config={'max_parked': 1})
        self.stream()
        st, h, b = hfutil.request(self.srv.addr, 'GET', '/sub/news', headers=SSE)
        self.assertEqual(st, 503, b)
        st, h, b = hfutil.request(self.srv.addr, 'GET', '/sub/bad~name', headers=SSE)
        self.assertEqual(st, 400, b)

    def test_s15_sse_off_answers_406_at_once_so_clients_long_poll(self):
        self.serve(config={'sse': 'off'})
        t0 = time.monotonic()
        st, h, b = hfutil.request(self.srv.addr, 'GET', '/sub/news', headers=SSE)
        self.assertEqual((st, json.loads(b)['error']), (406, 'not_acceptable'), b)
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(stats(self.srv.addr)['parked'], 0)

    def test_s16_a_gap_and_a_reset_are_named_events_before_the_messages(self):
        self.serve(config={'retain_messages': 3, 'prune_every': 1})
        ids = [self.pub('news', 'm%d' % i) for i in range(6)]
        s = self.stream(query='since=0')
        s.wait(lambda s: len(s.messages()) >= 3)
        evs = [e for e in s.events() if 'event' in e or 'id' in e]
        self.assertEqual(evs[0].get('event'), 'gap', s.text)
        self.assertEqual(json.loads(evs[0]['data'])['oldest'], ids[3])
        self.assertEqual(self.ids(s), ids[3:])
        # a cursor from another database (wrong epoch): reset, then new messages
        r = self.stream(query='since=%d&epoch=0123456789abcdef' % ids[-1])
        r.wait(lambda s: any(e.get('event') == 'reset' for e in s.events()))
        reset = json.loads([e for e in r.events() if e.get('event') == 'reset'][0]['data'])
        self.assertEqual(reset['cursor'], ids[-1])
        self.assertNotEqual(reset['epoch'], '0123456789abcdef')
        new = self.pub('news', 'after')
        r.wait(lambda s: len(s.messages()) >= 1)
        self.assertEqual(self.ids(r), [new])

    def test_s14_killed_worker_then_resume_from_last_event_id_on_a_sibling(self):
        srv = self.serve(workers=2)
        s = self.stream()
        first = [self.pub('news', 'a%d' % i) for i in range(3)]
        s.wait(lambda s: len(s.messages()) >= 3)
        last = s.messages()[-1]['id']
        hfutil.kill_pids(srv.worker_pids())
        s.wait(lambda s: s.closed or s.p.done, 10, 'the stream to break')
        later = [self.pub_retry('news', 'b%d' % i) for i in range(3)]
        r = self.stream(headers={'Last-Event-ID': last})
        r.wait(lambda s: len(s.messages()) >= 3)
        r.pump(0.3)
        self.assertEqual(self.ids(s) + self.ids(r), first + later)

    def pub_retry(self, channel, data, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.pub(channel, data)
            except (OSError, hfutil.FcgiError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class CgiSseTest(unittest.TestCase):
    """The CGI front streams the same events from its own process."""

    def test_c01_cgi_streams_events_and_ends_after_sse_max(self):
        tmp = hfutil.make_tmpdir('hf-sse-cgi-')
        self.addCleanup(hfutil.remove_tmpdir, tmp)
        db = os.path.join(tmp, 'hf.db')
        conf = hfutil.write_config(os.path.join(tmp, 'holdfast.conf'),
                                   {'sse_max': 3, 'sse_ping': 1})
        first = hfutil.publish_cli(db, 'news', 'one')
        env = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/sub/news', 'QUERY_STRING': 'since=0',
               'HTTP_ACCEPT': 'text/event-stream'}
        p = hfutil.cgi_popen(env, db=db, config_path=conf)
        self.addCleanup(p.kill)
        time.sleep(0.8)
        second = hfutil.publish_cli(db, 'news', 'two')
        out, _ = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0)
        head, _, body = out.decode().partition('\r\n\r\n')
        self.assertIn('Content-Type: text/event-stream', head)
        self.assertNotIn('Content-Length', head)
        evs = parse_events(body)
        self.assertEqual([int(e['id']) for e in evs if 'id' in e],
                         [int(x) for x in (first, second)])
        self.assertTrue(any('ping' in e.get('comment', []) for e in evs), body)

    def test_c02_a_cgi_stream_whose_client_left_ends_and_gives_its_place_back(self):
        """The write to a closed pipe fails (SIGPIPE ignored) instead of
        killing the process, so the stream's place under
        max_parked_per_client is given back: the same client streams again."""
        tmp = hfutil.make_tmpdir('hf-sse-cgi-')
        self.addCleanup(hfutil.remove_tmpdir, tmp)
        db = os.path.join(tmp, 'hf.db')
        conf = hfutil.write_config(os.path.join(tmp, 'holdfast.conf'),
                                   {'sse_max': 30, 'sse_ping': 1}, closed=True)
        with open(conf, 'a') as f:
            f.write('max_parked_per_client = 1\npublish = anyone\n')
        hfutil.publish_cli(db, 'news', 'one')
        env = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/sub/news', 'QUERY_STRING': 'since=0',
               'HTTP_ACCEPT': 'text/event-stream', 'REMOTE_ADDR': '192.0.2.7'}
        p = hfutil.cgi_popen(env, db=db, config_path=conf)
        self.addCleanup(p.kill)
        p.stdout.read(10)      # it is streaming
        p.stdout.close()       # the client leaves
        p.wait(timeout=10)     # at its next ping, at the latest
        self.assertEqual(p.returncode, 1, 'ended by a failed write, not by SIGPIPE')
        env2 = dict(env, QUERY_STRING='since=0')
        conf2 = os.path.join(tmp, 'short.conf')
        with open(conf) as f, open(conf2, 'w') as g:
            g.write(f.read().replace('sse_max = 30', 'sse_max = 1'))
        q = hfutil.cgi_popen(env2, db=db, config_path=conf2)
        self.addCleanup(q.kill)
        out, _ = q.communicate(timeout=10)
        self.assertIn(b'text/event-stream', out.split(b'\r\n\r\n')[0], out[:300])


if __name__ == '__main__':
    unittest.main()
