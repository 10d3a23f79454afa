#!/usr/bin/env python3
"""longrun.py -- long-run health of one holdfast worker, driven over its
FastCGI socket directly (no web server: faster, and nothing else to blame).

A cycle is one subscriber's life, and the driver keeps up to --concurrency
of them going at once, mixed (weights out of 100):

  wake  40  parked on a channel, then woken by a publish to it (in groups of
            8 per publish): 200 with the message
  t0    20  ?timeout=0 on an empty channel: 200, no messages, at once
  t1     5  ?timeout=1: parked, answered 200 with no messages after ~1 s
  gone  20  parked, then the connection is closed 10-60 ms later (a client
            that leaves): holdfast must drop the waiter
  now   15  ?since= just before the newest message: answered at once

Phases (run.sh picks the binaries):

  rss   `holdfast serve --workers 1`, --cycles cycles (100,000).  The worker's
        VmRSS (/proc/PID/status) and open fds (/proc/PID/fd) are taken after
        a warm-up of --warmup cycles and at the end, each time with nothing
        in flight and /stats saying nothing is parked; /stats must count
        (nearly) every `gone` cycle as left and every t0/t1 as a timeout.  Fails if the fds grew
        by more than FD_SLACK, or RSS by more than RSS_RATIO + RSS_SLACK_KB
        (20% + 2 MB), or any answer was not the expected one, or a waiter is
        left parked at the end.
  asan  the ASan/UBSan binary spawned as a web server would (a listening
        socket on fd 0, the mode lighttpd and mod_fcgid use; it returns from
        main(), so LeakSanitizer runs), --leak-cycles cycles (5,000), then
        SIGTERM.
        Fails on any ASan, LSan or UBSan report, or if its exit statistics
        (ASAN_OPTIONS=atexit=1) are missing: then LSan did not run either.
  vg    `holdfast serve --workers 1` under valgrind memcheck
        (--leak-check=full), --vg-cycles cycles (5,000), then SIGTERM.
        valgrind checks at the exit system call, so the pool worker's
        _exit() is covered (LeakSanitizer's atexit hook is not reached by
        _exit).  Fails on any error or definitely/indirectly lost block in
        any process.

Prints one "ok - ..." / "FAIL - ..." line per check and ends with
"longrun: N passed, M failed".  Every wait is bounded; every process is
stopped by pid.

    longrun.py --bin PATH [--asan-bin PATH] [--valgrind] [--cycles N] ...
"""
import argparse
import glob
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
import hfutil as h  # noqa: E402

FD_SLACK = 3              # fds the worker may gain (a lazily opened file or two)
RSS_RATIO = 0.20          # and RSS: 20% of the start ...
RSS_SLACK_KB = 2048       # ... plus 2 MB (allocator and SQLite cache settling)
GROUP = 8                 # subscribers woken by one publish
WAKE_CHANNELS = 40
KINDS = (('wake', 40), ('t0', 20), ('t1', 5), ('gone', 20), ('now', 15))
MAX_T1 = 300              # t1 cycles in flight at most (each takes a second)


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=''):
        if cond:
            self.passed += 1
            print('ok - %s%s' % (name, ' (%s)' % detail if detail else ''), flush=True)
        else:
            self.failed += 1
            print('FAIL - %s%s' % (name, ': %s' % detail if detail else ''), flush=True)
        return bool(cond)


R = Results()


# ---- the worker -------------------------------------------------------------

def proc_usage(pid):
    """(VmRSS in kB, open fds) of pid."""
    rss = None
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    return rss, len(os.listdir('/proc/%d/fd' % pid))


class Spawned(h.TrackedServer):
    """holdfast as a web server spawns it: a listening unix socket on fd 0."""

    def __init__(self, tmpdir, binary, env):
        self.dir = tmpdir
        self.sock = os.path.join(tmpdir, 'spawned.sock')
        self.addr = 'unix:' + self.sock
        self.binary = binary
        self.env = env
        self.proc = None
        self.known_pids = set()
        self.log_path = os.path.join(tmpdir, 'spawned.log')

    def start(self):
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(self.sock)
        ls.listen(1024)
        self.log = open(self.log_path, 'ab')
        try:
            self.proc = subprocess.Popen([self.binary], stdin=ls.fileno(), stdout=self.log,
                                         stderr=self.log, env=self.env, start_new_session=True)
        finally:
            ls.close()
        self.known_pids.add(self.proc.pid)
        h.track(self.known_pids)
        h.wait_for(lambda: h.request(self.addr, 'GET', '/health', timeout=2)[0] == 200, 20,
                   what='the spawned holdfast answering /health')
        return self

    def refresh_pids(self):
        pass

    def read_log(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode(errors='replace')

    def stop(self, timeout=30):
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self.proc = None
        self.close_output()
        return rc

    def close_output(self):
        self.log.close()


# ---- the driver -------------------------------------------------------------

class Cycle:
    __slots__ = ('kind', 'sock', 'parser', 'start', 'drop_at', 'channel', 'want_id')


class Group:
    """GROUP subscribers parked on one channel, then one publish to it."""

    def __init__(self):
        self.left = GROUP
        self.pub = 'no'           # 'sent', then 'done' once answered
        self.start = time.monotonic()


class Driver:
    """Runs cycles against addr; counts what each answered."""

    def __init__(self, addr, concurrency, seed=1):
        self.addr = addr
        self.path = addr[5:] if addr.startswith('unix:') else addr
        self.conc = concurrency
        self.rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        self.live = {}            # fd -> Cycle
        self.started = 0
        self.done = 0
        self.by_kind = dict((k, 0) for k, _ in KINDS)
        self.publishes = 0
        self.bad = []             # (kind, what) of wrong answers, the first few kept
        self.nbad = 0
        self.last = {}            # channel -> newest id published to it
        self.groups = {}          # channel -> Group (a wake group in progress)
        self.t1_live = 0
        self.ticket = 0

    # -- requests --
    def _send(self, kind, method, path, query='', body=b'', channel=None):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path)
        headers = {'Content-Type': 'text/plain'} if method == 'POST' else None
        s.sendall(h.fcgi_encode_request(method, path, query, headers, body))
        s.setblocking(False)
        c = Cycle()
        c.kind, c.sock, c.parser, c.start = kind, s, h.FcgiParser(), time.monotonic()
        c.drop_at, c.channel, c.want_id = None, channel, None
        self.live[s.fileno()] = c
        self.sel.register(s, selectors.EVENT_READ, c)
        return c

    def _bad(self, c, what):
        self.nbad += 1
        if len(self.bad) < 5:
            self.bad.append((c.kind, what))

    def _start_one(self):
        self.ticket += 1
        # a wake pick starts GROUP cycles: weigh it per cycle
        k = self.rng.choices([k for k, _ in KINDS],
                             [w / GROUP if k == 'wake' else w for k, w in KINDS])[0]
        if k == 't1' and self.t1_live >= MAX_T1:
            k = 't0'
        if k == 'now' and not self.last:
            k = 't0'
        if k == 'wake':
            free = [ch for ch in ('w.%d' % i for i in range(WAKE_CHANNELS))
                    if ch not in self.groups]
            if not free:
                k = 'gone'
            else:
                ch = self.rng.choice(free)
                self.groups[ch] = Group()
                for _ in range(GROUP):
                    self._send('wake', 'GET', '/sub/' + ch,
                               'since=%d&timeout=30' % self.last.get(ch, 0), channel=ch)
                return GROUP
        slot = self.ticket % 50
        if k == 't0':
            self._send('t0', 'GET', '/sub/t0.%d' % slot, 'timeout=0')
        elif k == 't1':
            self._send('t1', 'GET', '/sub/t1.%d' % slot, 'timeout=1')
            self.t1_live += 1
        elif k == 'gone':
            c = self._send('gone', 'GET', '/sub/gone.%d' % slot, 'timeout=30')
            c.drop_at = c.start + self.rng.uniform(0.010, 0.060)
        else:
            ch = self.rng.choice(sorted(self.last))
            c = self._send('now', 'GET', '/sub/' + ch, 'since=%d' % (self.last[ch] - 1), channel=ch)
            c.want_id = self.last[ch]
        return 1

    def _publish_ready_groups(self, now):
        for ch, g in self.groups.items():
            if g.pub == 'no' and now - g.start >= 0.02:
                g.pub = 'sent'
                self._send('pub', 'POST', '/pub/' + ch, body=b'm', channel=ch)

    # -- answers --
    def _finish(self, c, answer):
        self.sel.unregister(c.sock)
        del self.live[c.sock.fileno()]
        c.sock.close()
        took = time.monotonic() - c.start
        if c.kind == 'pub':
            self.publishes += 1
            if answer is None or answer[0] != 201:
                self._bad(c, 'publish: %r' % (answer,))
                self.groups.pop(c.channel, None)
                return
            self.last[c.channel] = json.loads(answer[2])['id']
            self._group_member_done(c.channel, publish=True)
            return
        self.done += 1
        self.by_kind[c.kind] += 1
        if c.kind == 't1':
            self.t1_live -= 1
        if c.kind == 'gone':
            if answer is not None:
                self._bad(c, 'answered before it left: %r' % (answer[:1],))
            return
        if answer is None or answer[0] != 200:
            self._bad(c, 'status %r' % (answer[0] if answer else 'no answer'))
            if c.kind == 'wake':
                self._group_member_done(c.channel)
            return
        j = json.loads(answer[2])
        msgs = j.get('messages')
        if c.kind in ('t0', 't1'):
            if msgs != [] or (c.kind == 't1' and not 0.8 <= took < 5) or \
                    (c.kind == 't0' and took > 5):
                self._bad(c, '%d messages after %.2f s' % (len(msgs or []), took))
        elif c.kind == 'now':
            if not msgs or msgs[-1]['id'] < c.want_id:
                self._bad(c, 'no message %d: %r' % (c.want_id, answer[2][:100]))
        else:
            if not msgs:
                self._bad(c, 'woken without a message: %r' % answer[2][:100])
            self._group_member_done(c.channel)

    def _group_member_done(self, ch, publish=False):
        g = self.groups[ch]
        if publish:
            g.pub = 'done'
        else:
            g.left -= 1
        if g.left == 0 and g.pub == 'done':
            del self.groups[ch]

    def _read(self, c):
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if data:
            try:
                c.parser.feed(data)
            except h.FcgiError as e:
                self._bad(c, repr(e))
                self._finish(c, None)
                return
        if c.parser.done:
            try:
                answer = h.parse_cgi_response(c.parser.stdout)
            except h.FcgiError as e:
                self._bad(c, repr(e))
                answer = None
            self._finish(c, answer)
        elif not data:
            self._finish(c, None)

    def run(self, cycles, deadline):
        """Start `cycles` more cycles and wait for all of them (and every
        publish) to end, or until the monotonic deadline.  True if done."""
        target = self.started + cycles
        while time.monotonic() < deadline:
            now = time.monotonic()
            while self.started < target and len(self.live) < self.conc:
                self.started += self._start_one()
            self._publish_ready_groups(now)
            for c in [c for c in self.live.values() if c.drop_at and c.drop_at <= now]:
                self._finish(c, None)
            if not self.live and self.started >= target:
                return True
            for key, _ in self.sel.select(0.005):
                if key.data.sock.fileno() in self.live:
                    self._read(key.data)
        return False

    def close(self):
        for c in list(self.live.values()):
            self.sel.unregister(c.sock)
            c.sock.close()
        self.live.clear()


def quiet(addr, timeout=10):
    """Wait until /stats says nothing is parked; the last parked count."""
    last = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            last = h.stats(addr)['parked']
        except (OSError, h.FcgiError, KeyError, ValueError) as e:
            last = repr(e)
        if last == 0:
            return 0
        time.sleep(0.1)
    return last


def drive(name, addr, cycles, warmup, limit_s, conc, on_warm=None):
    """Warm-up, on_warm(), the rest; checks the answers.  The driver."""
    d = Driver(addr, conc)
    t0 = time.monotonic()
    try:
        ok = d.run(min(warmup, cycles), t0 + limit_s)
        if ok and on_warm:
            on_warm()
        ok = ok and d.run(cycles - d.started, t0 + limit_s)
    finally:
        d.close()
    took = time.monotonic() - t0
    mix = ', '.join('%s %d' % kv for kv in d.by_kind.items())
    R.check('%s: %d cycles in %.0f s (%s; %d publishes)' % (name, d.done, took, mix, d.publishes),
            ok and d.done >= cycles, '' if ok else 'stopped at the %d s limit' % limit_s)
    R.check('%s: every answer as expected' % name, d.nbad == 0,
            '' if d.nbad == 0 else '%d wrong, e.g. %r' % (d.nbad, d.bad))
    # holdfast's own counters (a fresh server: all of them are ours) say the
    # cycles did what they were meant to: the ones that left were parked
    # and seen leaving (not merely never read), the timeouts timed out.
    st = h.stats(addr)
    gone, timed = d.by_kind['gone'], d.by_kind['t0'] + d.by_kind['t1']
    R.check('%s: /stats counts %d left (of %d gone), %d timeouts (of %d)' % (
        name, st['left'], gone, st['timeouts'], timed),
        st['left'] >= gone * 0.95 and st['timeouts'] == timed)
    return d


# ---- phases -------------------------------------------------------------------

def phase_rss(args, tmp):
    srv = h.HoldfastServer(tmp, workers=1).start()
    try:
        worker = srv.worker_pids()[0]
        marks = {}

        def mark(when):
            left = quiet(srv.addr)
            marks[when] = proc_usage(worker) + (left,)

        drive('rss', srv.addr, args.cycles, args.warmup, args.limit, args.concurrency,
              on_warm=lambda: mark('start'))
        time.sleep(1.0)
        mark('end')
        (rss0, fd0, p0), (rss1, fd1, p1) = marks['start'], marks['end']
        print('# worker %d: start (after %d cycles) RSS %d kB, %d fds; end RSS %d kB, %d fds'
              % (worker, args.warmup, rss0, fd0, rss1, fd1), flush=True)
        R.check('rss: nothing left parked (start %s, end %s)' % (p0, p1), p0 == 0 and p1 == 0)
        R.check('rss: open fds %d -> %d (at most +%d)' % (fd0, fd1, FD_SLACK),
                fd1 <= fd0 + FD_SLACK)
        bound = int(rss0 * (1 + RSS_RATIO)) + RSS_SLACK_KB
        R.check('rss: VmRSS %d kB -> %d kB (at most %d kB: +%d%% +%d kB)' % (
            rss0, rss1, bound, RSS_RATIO * 100, RSS_SLACK_KB), rss1 <= bound)
        R.check('rss: the worker is the same process', srv.worker_pids() == [worker],
                repr(srv.worker_pids()))
    finally:
        rc = srv.stop()
    R.check('rss: holdfast serve stops cleanly on SIGTERM', rc == 0, 'exit %r' % rc)


def phase_asan(args, tmp):
    logs = os.path.join(tmp, 'san')
    os.makedirs(logs)
    cfg = h.write_config(os.path.join(tmp, 'holdfast.conf'), '')
    env = h.clean_env(HOLDFAST_DB=os.path.join(tmp, 'asan.db'), HOLDFAST_CONFIG=cfg,
                      ASAN_OPTIONS='detect_leaks=1:atexit=1:log_path=%s/asan' % logs,
                      UBSAN_OPTIONS='print_stacktrace=1:log_path=%s/ubsan' % logs)
    srv = Spawned(tmp, args.asan_bin, env).start()
    try:
        drive('asan', srv.addr, args.leak_cycles, args.warmup, args.limit, args.concurrency)
        left = quiet(srv.addr)
        R.check('asan: nothing left parked', left == 0, repr(left))
    finally:
        rc = srv.stop()
    reports = ''
    for f in sorted(glob.glob(os.path.join(logs, '*'))):
        with open(f, errors='replace') as fh:
            reports += '--- %s\n%s' % (os.path.basename(f), fh.read())
    problems = [w for w in ('LeakSanitizer', 'AddressSanitizer: ', 'runtime error')
                if w in reports.replace('AddressSanitizer exit stats', '')]
    # Its exit statistics come after LSan's check, which ends the process
    # when it finds a leak: one or the other shows that LSan ran.
    ran = 'exit stats' in reports or 'LeakSanitizer' in reports
    R.check('asan: exits on SIGTERM and LSan ran (its report or the exit statistics)',
            rc is not None and ran, 'exit %r' % rc)
    R.check('asan: no ASan, LSan or UBSan report', not problems,
            '' if not problems else '%r\n%s' % (problems, reports[:6000]))


def phase_valgrind(args, tmp):
    vg = os.path.join(tmp, 'vg')
    os.makedirs(vg)
    wrapper = os.path.join(tmp, 'holdfast-vg')
    with open(wrapper, 'w') as f:
        f.write('#!/bin/sh\nexec valgrind --quiet --leak-check=full --show-leak-kinds=definite,'
                'indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99 '
                '--log-file=%s/vg.%%p "%s" "$@"\n' % (vg, args.bin))
    os.chmod(wrapper, 0o755)
    os.environ['HOLDFAST_BIN'] = wrapper
    try:
        srv = h.HoldfastServer(tmp, workers=1)
        srv.start(wait=False)
        srv.wait_ready(timeout=60)
        try:
            drive('valgrind', srv.addr, args.vg_cycles, min(args.warmup, args.vg_cycles),
                  args.limit, min(args.concurrency, 64))
            left = quiet(srv.addr, 20)
            R.check('valgrind: nothing left parked', left == 0, repr(left))
        finally:
            rc = srv.stop(timeout=60)
    finally:
        os.environ['HOLDFAST_BIN'] = args.bin
    text = ''
    files = sorted(glob.glob(os.path.join(vg, 'vg.*')))
    R.check('valgrind: ran the supervisor and the worker (%d logs)' % len(files),
            len(files) >= 2)
    for f in files:
        with open(f, errors='replace') as fh:
            body = fh.read()
        if body.strip():
            text += '--- %s\n%s' % (os.path.basename(f), body)
    R.check('valgrind: supervisor and worker exit 0 with no error or leak', rc == 0 and not text,
            'exit %r%s' % (rc, '\n' + text[:6000] if text else ''))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bin', required=True)
    ap.add_argument('--asan-bin')
    ap.add_argument('--valgrind', action='store_true')
    ap.add_argument('--cycles', type=int, default=100000)
    ap.add_argument('--warmup', type=int, default=1000)
    ap.add_argument('--leak-cycles', type=int, default=5000)
    ap.add_argument('--vg-cycles', type=int, default=5000)
    ap.add_argument('--concurrency', type=int, default=512)
    ap.add_argument('--limit', type=float, default=150, help='seconds per phase at most')
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    os.environ['HOLDFAST_BIN'] = args.bin
    t0 = time.monotonic()
    for name, run, wanted in (('rss', phase_rss, True), ('asan', phase_asan, args.asan_bin),
                              ('valgrind', phase_valgrind, args.valgrind)):
        if not wanted:
            continue
        tmp = h.make_tmpdir('hf-long-')
        try:
            run(args, tmp)
        except Exception as e:  # noqa: BLE001 -- one failed phase, then the next
            R.check('%s: ran to the end' % name, False, repr(e))
        finally:
            left = h.leftovers()
            if left:
                R.check('%s: no process left behind' % name, False, repr(left))
            h.remove_tmpdir(tmp)
    print('# %.0f s' % (time.monotonic() - t0))
    print('longrun: %d passed, %d failed' % (R.passed, R.failed))
    return 1 if R.failed else 0


if __name__ == '__main__':
    sys.exit(main())
