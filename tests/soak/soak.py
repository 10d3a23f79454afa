#!/usr/bin/env python3
"""soak.py -- fault-injection soak of holdfast through a real web server.

    soak.py --server nginx|apache-fcgid [--bin PATH] [--seconds N] [options]

nginx: the shipped deploy/nginx/holdfast-site.conf in front of `holdfast
serve` (2 workers, deploy/systemd/holdfast.conf); apache-fcgid: the shipped
deploy/apache-fcgid/vhost.conf, mod_fcgid spawning holdfast.  Both are set up
exactly as tests/deploy/deploy_test.py does (its classes are reused), on
127.0.0.1 and a free port, with the database on a private tmpfs (--tmpfs-mb,
32 MB) mounted for the run.  Servers run as `nobody` when we are root.

Load: publishers that retry every message with its Idempotency-Key until it
is acknowledged; resuming subscribers (some on two channels) that always send
back cursor and epoch.  A chaos loop injects faults at random intervals (see
README).  At the end every subscriber's record is compared with the
acknowledged messages of its channels from its start cursor on.  Exit status
non-zero on any violated invariant (see README for the list).
"""
import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soakutil as su  # noqa: E402
from soakutil import dt, hfutil, now  # noqa: E402

CHANNELS = ['soak.c0', 'soak.c1', 'soak.c2', 'soak.c3']
WEIGHTS = [0.4, 0.3, 0.25, 0.05]     # soak.c3 is quiet: its subscribers stay parked
DISK_RECOVERY = 5.0     # s from freeing the disk to the next acknowledged publish
CRASH_RECOVERY = 5.0    # s from the end of a crash loop (12 young crashes) to the next ack
FILL_CHANNEL = 'soak.fill'           # big messages while the disk is full (nobody reads it)


def log(msg):
    print('# [%7.2f] %s' % (now() - T0, msg), flush=True)


T0 = now()


# ---- the shared run state -------------------------------------------------------------

class Run:
    def __init__(self, args, target):
        self.args = args
        self.t = target
        self.cap = su.Cap(args.max_requests)
        self.lock = threading.Lock()
        self.load_over = threading.Event()    # no new messages from here on
        self.pubs_done = threading.Event()    # every publisher finished
        self.stop_all = threading.Event()     # everybody stops now
        self.recovery_deadline = None
        self.drain_deadline = None
        self.targets = {}                     # channel -> highest acked id
        self.ack_times = []                   # monotonic time of every ack
        self.events = []                      # (t, role, what) for error attribution
        self.faults = []                      # (t_start, t_end, kind, detail)
        self.pub_status = collections.Counter()
        self.sub_status = collections.Counter()
        self.load_t0 = None
        self.load_t1 = None

    def base(self, path):
        return self.t.base + path

    def event(self, role, what):
        with self.lock:
            if len(self.events) < 200000:
                self.events.append((now(), role, what))

    def ack(self, t):
        with self.lock:
            self.ack_times.append(t)


# ---- publishers -----------------------------------------------------------------------

class Publisher(threading.Thread):
    def __init__(self, run, idx):
        super().__init__(daemon=True, name='pub%d' % idx)
        self.run_ = run
        self.idx = idx
        self.acks = []           # (channel, id, payload, t_ack)
        self.unacked = []        # messages never acknowledged: (channel, payload, attempts, last)
        self.rejected = []       # 4xx answers (not retried)
        self.idem_mismatch = []  # a 200 replay with another id than the first ack
        self.order_violations = []
        self.replays = 0
        self.attempts = 0
        self.retries = 0
        self.sent_payloads = {}  # payload -> channel, every message ever attempted
        self.rng = random.Random(hash((os.getpid(), idx, time.time())))

    def post(self, channel, payload, key, timeout):
        r = self.run_
        h = {'Authorization': 'Bearer ' + dt.KEY, 'Idempotency-Key': key,
             'Content-Type': 'text/plain; charset=utf-8'}
        self.attempts += 1
        try:
            st, _, b = su.http(r.t.port, 'POST', r.base('/pub/' + channel), payload, h,
                               timeout=timeout, cap=r.cap)
        except su.HttpError as e:
            r.pub_status[e.kind] += 1
            r.event('pub', e.kind)
            return None, e.kind
        r.pub_status[st] += 1
        if st not in (200, 201):
            r.event('pub', st)
        try:
            j = json.loads(b) if b else None
        except ValueError:
            j = None
        return st, j

    def run(self):
        try:
            self.loop()
        except su.CapExceeded:
            log('pub%d: request cap reached' % self.idx)
        except Exception as e:  # noqa: BLE001 -- reported
            log('pub%d: crashed: %r' % (self.idx, e))
            self.rejected.append(('crash', repr(e)))

    def loop(self):
        r = self.run_
        args = r.args
        period = args.publishers / max(args.rate, 0.1)
        n = 0
        last_id = 0
        while not r.load_over.is_set() and not r.stop_all.is_set():
            t_start = now()
            n += 1
            ch = self.rng.choices(CHANNELS, WEIGHTS)[0]
            payload = 'p%d-%06d-%s' % (self.idx, n, os.urandom(4).hex())
            key = 'soak-%d-%d-%s' % (self.idx, n, os.urandom(6).hex())
            self.sent_payloads[payload] = ch
            got = self.until_acked(ch, payload, key)
            if got is None:
                continue
            mid, t_ack = got
            if mid <= last_id:
                self.order_violations.append((last_id, mid, payload))
            last_id = max(last_id, mid)
            self.acks.append((ch, mid, payload, t_ack))
            r.ack(t_ack)
            if self.rng.random() < args.replay_fraction:
                self.replay(ch, payload, key, mid)
            left = period * self.rng.uniform(0.5, 1.5) - (now() - t_start)
            if left > 0:
                time.sleep(left)

    def until_acked(self, ch, payload, key):
        """Retry until acknowledged; (id, t) or None (given up at the deadline)."""
        r = self.run_
        delay = 0.05
        attempts = 0
        last = None
        while True:
            if r.load_over.is_set() and r.recovery_deadline and now() > r.recovery_deadline:
                self.unacked.append((ch, payload, attempts, last))
                return None
            if r.stop_all.is_set():
                self.unacked.append((ch, payload, attempts, last))
                return None
            attempts += 1
            if attempts > 1:
                self.retries += 1
            st, j = self.post(ch, payload, key, r.args.pub_timeout)
            t = now()
            if st in (200, 201) and j and isinstance(j.get('id'), int):
                return j['id'], t
            last = st if st is not None else j
            if st is not None and 400 <= st < 500 and st not in (408, 429):
                self.rejected.append((ch, payload, st, j))
                return None
            time.sleep(delay * self.rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)

    def replay(self, ch, payload, key, mid):
        """The same message and key once more: 200 with the original id."""
        r = self.run_
        for _ in range(10):
            if r.stop_all.is_set():
                return
            st, j = self.post(ch, payload, key, r.args.pub_timeout)
            if st in (200, 201) and j:
                self.replays += 1
                if st != 200 or j.get('id') != mid:
                    self.idem_mismatch.append((ch, key, mid, st, j))
                return
            if st is not None and 400 <= st < 500 and st not in (408, 429):
                self.rejected.append((ch, payload, st, j))
                return
            time.sleep(0.2)


# ---- subscribers ----------------------------------------------------------------------

class Subscriber(threading.Thread):
    def __init__(self, run, idx, channels, lag_at=None, lag_for=0):
        super().__init__(daemon=True, name='sub%d' % idx)
        self.run_ = run
        self.idx = idx
        self.channels = channels
        self.lag_at = lag_at           # seconds into the load when it stops polling
        self.lag_for = lag_for
        self.rng = random.Random(hash((os.getpid(), 'sub', idx, time.time())))
        self.start_cursor = None
        self.cursor = None
        self.epoch = None
        self.record = []               # (id, channel, data) in delivery order
        self.gaps = []                 # (cursor before, oldest)
        self.resets = []
        self.epoch_changes = []
        self.cursor_regressions = []
        self.foreign = []              # messages of channels it did not ask for
        self.bad_answers = []          # 200 without a usable JSON body
        self.polls = 0
        self.cut_lock = threading.Lock()
        self.cut_mode = None
        self.cut_done = threading.Event()
        self.cuts = collections.Counter()
        self.sent_at = None
        self.in_request = False
        self.got_bytes = False
        self.finished = False
        self.caught_up = False
        self.lagging = False

    # control hooks for su.http
    def on_sent(self):
        self.sent_at = now()

    def cut_request(self):
        with self.cut_lock:
            return self.cut_mode

    def should_abandon(self):
        r = self.run_
        if r.stop_all.is_set():
            return True
        return self.drained()

    def drained(self):
        r = self.run_
        if not r.pubs_done.is_set() or self.cursor is None:
            return False
        return all(self.cursor >= r.targets.get(c, 0) for c in self.channels)

    def ask_cut(self, mode):
        """From the chaos thread: cut the next/current poll. True if done."""
        with self.cut_lock:
            if self.cut_mode is not None:
                return False
            self.cut_done.clear()
            self.cut_mode = mode
        ok = self.cut_done.wait(6)
        with self.cut_lock:
            self.cut_mode = None
        return ok

    def run(self):
        try:
            self.loop()
        except su.CapExceeded:
            log('sub%d: request cap reached' % self.idx)
        except Exception as e:  # noqa: BLE001 -- reported
            log('sub%d: crashed: %r' % (self.idx, e))
            self.bad_answers.append(('crash', repr(e)))
        self.finished = True

    def poll(self, query, timeout):
        r = self.run_
        path = r.base('/sub/%s?%s' % (','.join(self.channels), urllib.parse.urlencode(query)))
        self.in_request = True
        try:
            st, h, b = su.http(r.t.port, 'GET', path, timeout=timeout + 20, cap=r.cap, ctl=self)
        except su.Cut as c:
            self.cuts[c.when] += 1
            r.sub_status['cut_' + c.when] += 1
            self.cut_done.set()
            with self.cut_lock:
                self.cut_mode = None
            return None
        except su.HttpError as e:
            if e.kind != 'abandoned':
                r.sub_status[e.kind] += 1
                r.event('sub', e.kind)
            if e.kind == 'client_timeout':
                # a poll nobody answered: in the timeline, next to the faults
                log('sub%d: no answer to since=%s timeout=%d in %d s (client timeout)' % (
                    self.idx, query.get('since'), timeout, timeout + 20))
            return None
        finally:
            self.in_request = False
        r.sub_status[st] += 1
        if st != 200:
            r.event('sub', st)
            return None
        try:
            j = json.loads(b)
            if not isinstance(j, dict) or not isinstance(j.get('cursor'), int):
                raise ValueError('no cursor')
        except ValueError as e:
            self.bad_answers.append((st, repr(e), b[:200]))
            return None
        return j

    def loop(self):
        r = self.run_
        delay = 0.1
        # Start: a timeout=0 poll without a cursor gives the head and the epoch.
        while self.start_cursor is None:
            if r.stop_all.is_set() or r.load_over.is_set():
                return
            j = self.poll({'timeout': 0}, 0)
            if j is None:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.start_cursor = self.cursor = j['cursor']
            self.epoch = j.get('epoch')
        lagged = False
        while not r.stop_all.is_set():
            if self.drained():
                self.caught_up = True
                return
            if r.drain_deadline and now() > r.drain_deadline:
                return
            if (self.lag_at is not None and not lagged and r.load_t0 and
                    now() - r.load_t0 > self.lag_at and not r.load_over.is_set()):
                lagged = True
                self.lagging = True
                log('sub%d: stops polling for %.0f s (a lagging client)' % (self.idx, self.lag_for))
                end = now() + self.lag_for
                while now() < end and not r.stop_all.is_set() and not r.load_over.is_set():
                    time.sleep(0.2)
                self.lagging = False
            tmo = 2 if r.pubs_done.is_set() else self.rng.randint(*r.args.poll_timeout)
            q = {'since': self.cursor, 'timeout': tmo}
            if self.epoch:
                q['epoch'] = self.epoch
            self.polls += 1
            j = self.poll(q, tmo)
            if j is None:
                time.sleep(delay * self.rng.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.1
            self.take(j)

    def take(self, j):
        before = self.cursor
        if j.get('reset'):
            self.resets.append((before, j.get('head'), j.get('epoch')))
        if j.get('epoch') != self.epoch and not j.get('reset'):
            self.epoch_changes.append((self.epoch, j.get('epoch')))
        if j.get('gap'):
            self.gaps.append((before, j.get('oldest')))
        for m in j.get('messages') or []:
            if m.get('channel') not in self.channels:
                self.foreign.append(m.get('id'))
            self.record.append((m.get('id'), m.get('channel'), m.get('data')))
        c = j['cursor']
        if c < before and not j.get('reset'):
            self.cursor_regressions.append((before, c))
        ids = [m.get('id') for m in j.get('messages') or []]
        if ids and isinstance(ids[-1], int) and c < ids[-1]:
            self.cursor_regressions.append(('cursor below its last message', c, ids[-1]))
        self.cursor = c
        self.epoch = j.get('epoch', self.epoch)


# ---- servers ----------------------------------------------------------------------------

def spawn_logged(dep, argv, log_name, **kw):
    return dt.spawn(argv, os.path.join(dep.logs, log_name), **kw)


def port_open(port):
    import socket
    try:
        socket.create_connection(('127.0.0.1', port), timeout=1).close()
        return True
    except OSError:
        return False


class Target:
    """A deployment plus the handles the chaos needs."""
    kinds = ()
    outage_bound = 15.0

    def __init__(self, dep, args):
        self.dep = dep
        self.args = args
        self.port = dep.port
        self.base = dep.base
        self.findings_extra = []
        self.all_pids = {}          # pid -> start time, every process of ours seen
        self.sessions = set()       # sessions of processes we started

    def note(self, p):
        self.all_pids.update(su.snapshot([p.pid]))
        self.sessions.add(p.pid)

    def health(self, timeout=3):
        try:
            st, _, b = su.http(self.port, 'GET', self.base + '/health', timeout=timeout)
            return st == 200
        except (su.HttpError, OSError):
            return False

    def sweep(self):
        """Every live process of ours: by session, by pid seen, by directory marker."""
        found = set()
        for sid in self.sessions:
            found.update(p for p, _ in dt.procs_of(sid, None))
        found.update(p for p, _ in dt.procs_of(None, self.dep.dir))
        snap = su.snapshot(found)
        snap.update({p: t for p, t in self.all_pids.items() if su.start_time(p) == t})
        return snap

    def port_free(self, timeout=5):
        """After the web server was killed: nobody may listen on its port any
        more; a finding (with who listens) if somebody still does."""
        end = now() + timeout
        while now() < end:
            if not port_open(self.port):
                return True
            time.sleep(0.1)
        who = su.listeners(self.port)
        self.findings_extra.append('port %d still served %.0f s after the web server was '
                                   'killed, by %r' % (self.port, timeout, who))
        return False

    def last_error(self):
        try:
            with open(self.dep.p('logs', 'error.log'), errors='replace') as f:
                lines = [x for x in f.read().splitlines() if '[emerg]' in x or '[crit]' in x]
            return lines[-1][:200] if lines else ''
        except OSError:
            return ''

    def refresh(self):
        self.all_pids.update(su.snapshot(self.workers()))


class NginxTarget(Target):
    name = 'nginx'
    kinds = ('kill_worker', 'kill_all_workers', 'crash_loop', 'kill_supervisor', 'web_graceful',
             'web_hard', 'stop_worker', 'cut_parked', 'cut_answer', 'prune', 'disk_full',
             'oversize')
    full_pool = 2

    def __init__(self, dep, args):
        super().__init__(dep, args)
        self.serve = None
        self.nginx = None
        self.orphans = {}           # workers of a killed supervisor: pid -> start time

    def start_serve(self):
        self.serve = spawn_logged(self.dep, self.dep.serve_argv, 'holdfast.out')
        self.note(self.serve)
        ok = su.now() + 15
        while su.now() < ok:
            if self.serve.poll() is not None:
                return False
            if len(hfutil.children_of(self.serve.pid)) >= 2:
                break
            time.sleep(0.05)
        self.refresh()
        return self.serve.poll() is None

    def start_nginx(self):
        d = self.dep
        self.nginx = spawn_logged(d, [dt.NGINX, '-c', d.p('conf', 'nginx.conf'), '-p', d.dir + '/',
                                      '-e', d.p('logs', 'error.log')], 'nginx.out')
        self.note(self.nginx)
        end = su.now() + 15
        while su.now() < end and self.nginx.poll() is None:
            if port_open(self.port):
                return True
            time.sleep(0.05)
        return False

    def start(self):
        return self.start_serve() and self.start_nginx()

    def workers(self):
        if self.serve is None or self.serve.poll() is not None:
            return []
        return hfutil.children_of(self.serve.pid)

    def kill_supervisor(self):
        old = self.workers()
        self.orphans.update(su.snapshot(old))
        os.kill(self.serve.pid, signal.SIGKILL)
        self.serve.wait(10)
        ok = self.start_serve()
        return 'supervisor %d killed (workers %s orphaned), restarted: %s' % (
            self.serve.pid, old, 'ok' if ok else 'FAILED')

    def web_graceful(self):
        os.kill(self.nginx.pid, signal.SIGHUP)
        return 'nginx SIGHUP (reload, old workers finish their requests)'

    def web_hard(self):
        snap = su.snapshot(p for p, _ in dt.procs_of(self.nginx.pid, None))
        su.kill_snap(snap)
        self.nginx.wait(10)
        su.wait_gone(snap, 5)
        self.port_free()
        ok = self.start_nginx()
        return 'nginx SIGKILLed (%d processes), restarted: %s' % (len(snap), 'ok' if ok else 'FAILED')

    def ensure_up(self):
        """Restart what died by itself; what was restarted (findings)."""
        out = []
        if self.serve.poll() is not None:
            out.append('holdfast serve exited by itself (rc %s)' % self.serve.returncode)
            self.start_serve()
        if self.nginx.poll() is not None:
            out.append('nginx exited by itself (rc %s): %s' % (self.nginx.returncode,
                                                              self.last_error()))
            self.start_nginx()
        return out

    def restart_backend(self):
        self.serve.send_signal(signal.SIGTERM)
        try:
            self.serve.wait(20)
            how = 'holdfast serve SIGTERMed (exited %s)' % self.serve.returncode
        except subprocess.TimeoutExpired:
            os.kill(self.serve.pid, signal.SIGKILL)
            self.serve.wait(5)
            how = 'holdfast serve ignored SIGTERM for 20 s (SIGKILLed)'
            self.findings_extra.append(how + ' on a full disk')
        ok = self.start_serve()
        return how + ' and started again on the full disk: %s' % (
            'its workers are up' if ok else 'its workers did NOT come up (yet)')

    def prune_argv(self):
        return [self.dep.bin, 'prune', '--db', self.dep.db, '--config',
                self.dep.p('conf', 'holdfast.conf')]

    def stop(self):
        ok = True
        for p, sig in ((self.nginx, signal.SIGQUIT), (self.serve, signal.SIGTERM)):
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(sig)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                ok = False
        return ok


class ApacheTarget(Target):
    name = 'apache-fcgid'
    kinds = ('kill_worker', 'kill_all_workers', 'web_graceful', 'web_hard', 'stop_worker',
             'cut_parked', 'cut_answer', 'prune', 'disk_full', 'oversize')
    full_pool = None

    def __init__(self, dep, args):
        super().__init__(dep, args)
        self.apache = None
        self.orphans = {}

    def start(self):
        d = self.dep
        self.apache = spawn_logged(d, [dt.APACHE, '-f', d.p('conf', 'httpd.conf'), '-DFOREGROUND'],
                                   'apache.out')
        self.note(self.apache)
        end = su.now() + 20
        while su.now() < end and self.apache.poll() is None:
            if port_open(self.port):
                return True
            time.sleep(0.05)
        return False

    def workers(self):
        marker = self.dep.p('lib', 'holdfast.fcgi')
        return [p for p, cmd in dt.procs_of(None, marker) if cmd.startswith(marker)]

    def web_graceful(self):
        os.kill(self.apache.pid, signal.SIGUSR1)
        return 'apache SIGUSR1 (graceful restart)'

    def web_hard(self):
        pids = [p for p, _ in dt.procs_of(self.apache.pid, None)]
        snap = su.snapshot(pids + [p for p in self.workers() if p not in pids])
        su.kill_snap(snap)
        self.apache.wait(10)
        su.wait_gone(snap, 5)
        self.port_free()
        ok = self.start()
        return 'apache and its %d processes SIGKILLed, restarted: %s' % (
            len(snap), 'ok' if ok else 'FAILED')

    def ensure_up(self):
        out = []
        if self.apache.poll() is not None:
            out.append('apache exited by itself (rc %s)' % self.apache.returncode)
            self.start()
        return out

    def restart_backend(self):
        before = su.snapshot(self.workers())
        os.kill(self.apache.pid, signal.SIGUSR1)
        gone = su.wait_gone(before, 10)
        return 'apache graceful restart (its %d holdfast processes %s)' % (
            len(before), 'exited' if gone else 'still there after 10 s')

    def prune_argv(self):
        return [self.dep.bin, 'prune', '--db', self.dep.db]

    def stop(self):
        if self.apache is None:
            return True
        if self.apache.poll() is None:
            self.apache.send_signal(signal.SIGTERM)
        try:
            self.apache.wait(20)
            return True
        except subprocess.TimeoutExpired:
            return False


def make_target(args, root):
    if args.server == 'nginx':
        dep = dt.Nginx(root, args.bin)
        dep.port = dt.free_port()
        dep.setup()
        with open(dep.p('conf', 'holdfast.conf'), 'a') as f:
            f.write('\n# soak: a short retention so that a lagging client meets a gap\n'
                    'retain_messages = %d\n'
                    '# soak: every client is 127.0.0.1 and publishes as fast as answered\n'
                    'max_parked_per_client = 0\npublish_rate = 0\n' % args.retain)
        t = NginxTarget(dep, args)
    else:
        dep = dt.ApacheFcgidVhost(root, args.bin)
        dep.port = dt.free_port()
        dep.setup()
        vhost = dep.p('conf', 'vhost.conf')
        with open(vhost) as f:
            text = f.read()
        text = text.replace('</VirtualHost>',
                            '    # soak: a short retention so that a lagging client meets a gap\n'
                            '    FcgidInitialEnv HOLDFAST_RETAIN_MESSAGES %d\n'
                            '    # soak: every client is 127.0.0.1 and publishes as fast as answered\n'
                            '    FcgidInitialEnv HOLDFAST_MAX_PARKED_PER_CLIENT 0\n'
                            '    FcgidInitialEnv HOLDFAST_PUBLISH_RATE 0\n</VirtualHost>'
                            % args.retain)
        with open(vhost, 'w') as f:
            f.write(text)
        # fcntl-lock mutexes: a SIGKILLed Apache leaves no SysV semaphore behind.
        dt.apache_conf(dep, ['fcgid'], 'Include %s' % vhost, docroot=False,
                       extra='Mutex file:%s default' % dep.run)
        t = ApacheTarget(dep, args)
    return dep, t


# ---- chaos ------------------------------------------------------------------------------

class Chaos(threading.Thread):
    def __init__(self, run, subs):
        super().__init__(daemon=True, name='chaos')
        self.run_ = run
        self.subs = subs
        self.t = run.t
        self.counts = collections.Counter()
        self.skipped = collections.Counter()
        self.findings = []
        self.stopped = {}            # pid -> start time, while SIGSTOPped
        self.filler = os.path.join(self.t.dep.data, 'soak-filler')
        self.rng = random.Random()
        self.prune_fail = []
        self.oversize_bad = []
        self.oversize_info = []      # mod_fcgid's own answers to bodies over its limit
        self.disk_full_n = 0
        self.disk_bad = []
        self.disk_no_bite = 0
        self.crash_loop_end = []
        self.disk_freed = []         # (t, variant) when the filler was deleted

    def run(self):
        r = self.run_
        kinds = list(self.t.kinds)
        if r.args.faults:
            kinds = [k for k in kinds if k in r.args.faults.split(',')]
        order = []
        try:
            time.sleep(min(3, r.args.seconds / 10))
            while not r.load_over.is_set() and not r.stop_all.is_set():
                if not order:
                    order = kinds[:]
                    self.rng.shuffle(order)
                kind = order.pop()
                t0 = now()
                try:
                    detail = getattr(self, 'f_' + kind)()
                except Exception as e:  # noqa: BLE001 -- a fault that failed to inject
                    detail = 'ERROR %r' % e
                    self.findings.append('%s: %r' % (kind, e))
                t1 = now()
                if detail is None:
                    self.skipped[kind] += 1
                else:
                    self.counts[kind] += 1
                    r.faults.append((t0, t1, kind, detail))
                    log('fault %s: %s' % (kind, detail))
                for f in self.t.ensure_up():
                    self.findings.append(f)
                    log('FINDING: ' + f)
                end = now() + self.rng.uniform(*r.args.fault_interval)
                while now() < end and not r.load_over.is_set():
                    time.sleep(0.1)
        finally:
            self.restore()

    def restore(self):
        for pid, start in list(self.stopped.items()):
            if hfutil.proc_stat(pid) and hfutil.proc_stat(pid)[1] == start:
                os.kill(pid, signal.SIGCONT)
        self.stopped.clear()
        try:
            os.unlink(self.filler)
        except FileNotFoundError:
            pass

    def pick_worker(self):
        w = self.t.workers()
        self.t.refresh()
        return self.rng.choice(w) if w else None

    def f_kill_worker(self):
        pid = self.pick_worker()
        if pid is None:
            return None
        os.kill(pid, signal.SIGKILL)
        return 'worker %d SIGKILLed' % pid

    def f_kill_all_workers(self):
        w = self.t.workers()
        self.t.refresh()
        if not w:
            return None
        su.kill_snap(su.snapshot(w))
        return 'every worker SIGKILLed at once: %s' % w

    def f_crash_loop(self):
        """Workers crash (SIGABRT, as an assert would) as soon as they appear,
        12 deaths in all, each one young; then they are left alone and the
        pool must serve again promptly.  Crashes back a seat off (that is
        right), but the back-off must not leave the pool without any worker
        for long: one shared back-off doubling at each crash would have reached
        30 s (the cap) by then."""
        first = self.t.workers()
        if not first:
            return None
        kills = list(first)
        su.kill_snap(su.snapshot(first), signal.SIGABRT)
        end = now() + 40
        while len(kills) < 12 and now() < end and not self.run_.stop_all.is_set():
            new = [w for w in self.t.workers() if w not in kills]
            if new:
                new = new[:12 - len(kills)]
                su.kill_snap(su.snapshot(new), signal.SIGABRT)
                kills += new
            time.sleep(0.01)
        self.crash_loop_end.append(now())
        return '%d workers crashed (SIGABRT) as they appeared, in %.1f s: %s' % (
            len(kills), 40 - (end - now()), kills)

    def f_oversize(self):
        """A body over max_body (64 KiB): the answer must be holdfast's 413
        (100 000 bytes; behind nginx also 900 000, under its 1m
        client_max_body_size).  Behind mod_fcgid a body over its
        FcgidMaxRequestLen (128 KiB by default) never reaches holdfast: what
        Apache answers to 200 000 bytes is reported, not judged."""
        r = self.run_
        h = {'Authorization': 'Bearer ' + dt.KEY, 'Content-Type': 'text/plain'}
        sizes = [100000] + ([900000] if self.t.name == 'nginx' else [200000])
        out = []
        for size in sizes:
            try:
                code, _, b = su.http(self.t.port, 'POST', r.base('/pub/' + FILL_CHANNEL),
                                     'y' * size, h, timeout=15, cap=r.cap)
            except su.HttpError as e:
                code, b = e.kind, b''
            try:
                err = json.loads(b).get('error')
            except (ValueError, AttributeError):
                err = None
            what = '%d bytes: %s %s' % (size, code, err or b[:40])
            if self.t.name != 'nginx' and size > 131072:
                if what.split(':', 1)[1] not in self.oversize_info:
                    self.oversize_info.append(what.split(':', 1)[1])
            elif code != 413 or err != 'body_too_large':
                self.oversize_bad.append(what)
            out.append(what)
        return 'publishes over max_body answered: ' + '; '.join(out)

    def f_kill_supervisor(self):
        return self.t.kill_supervisor()

    def f_web_graceful(self):
        return self.t.web_graceful()

    def f_web_hard(self):
        return self.t.web_hard()

    def f_stop_worker(self):
        pid = self.pick_worker()
        if pid is None:
            return None
        st = hfutil.proc_stat(pid)
        if not st:
            return None
        hold = self.rng.uniform(*self.run_.args.stop_hold)
        os.kill(pid, signal.SIGSTOP)
        self.stopped[pid] = st[1]
        time.sleep(hold)
        if hfutil.proc_stat(pid) and hfutil.proc_stat(pid)[1] == st[1]:
            os.kill(pid, signal.SIGCONT)
        del self.stopped[pid]
        return 'worker %d SIGSTOPped for %.1f s, then SIGCONT' % (pid, hold)

    def cut(self, mode):
        cand = [s for s in self.subs if not s.finished and not s.lagging and
                s.start_cursor is not None]
        self.rng.shuffle(cand)
        if mode == 'parked':
            # subscribers of the quiet channel are parked most of the time
            cand.sort(key=lambda s: s.channels != [CHANNELS[3]])
        for s in cand[:3]:
            if s.ask_cut(mode):
                return 'sub%d: connection closed (RST) %s' % (
                    s.idx, 'while its poll was parked' if mode == 'parked'
                    else 'as the answer arrived (answer dropped, resumes with the old cursor)')
        return None

    def f_cut_parked(self):
        return self.cut('parked')

    def f_cut_answer(self):
        return self.cut('answer')

    def f_prune(self):
        env = hfutil.clean_env(HOLDFAST_RETAIN_MESSAGES=str(self.run_.args.retain))
        kw = {}
        if dt.RUN_AS:
            kw = {'user': dt.RUN_AS[0], 'group': dt.RUN_AS[1], 'extra_groups': []}
        t0 = now()
        p = subprocess.run(self.t.prune_argv(), env=env, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL, **kw)
        took = now() - t0
        out = (p.stdout + p.stderr).strip().replace('\n', ' ')[:160]
        if p.returncode != 0:
            self.prune_fail.append((p.returncode, out))
        return 'holdfast prune: rc %d in %.2f s: %s' % (p.returncode, took, out)

    def f_disk_full(self):
        """Fill the tmpfs, then publish 16 KB messages to a channel nobody reads
        until the server refuses one (the log needs new blocks: SQLite reuses
        the pages its files already have), hold, free.  In turn: (a) just
        that; (b) every worker SIGKILLed while the disk is full (their
        successors start on a full disk); (c) the whole backend restarted
        cleanly while full (nginx: holdfast serve SIGTERMed and started again;
        apache: a graceful restart, which stops every holdfast process)."""
        r = self.run_
        hold = self.rng.uniform(*r.args.disk_hold)
        n = su.fill_disk(self.filler)
        st = os.statvfs(self.t.dep.data)
        body = ('x' * 32768)
        h = {'Authorization': 'Bearer ' + dt.KEY, 'Content-Type': 'text/plain'}
        sent, refused, code, end = 0, None, None, now() + 20
        while sent < 1500 and now() < end and not r.stop_all.is_set():
            sent += 1
            try:
                code, _, b = su.http(self.t.port, 'POST', r.base('/pub/' + FILL_CHANNEL), body, h,
                                     timeout=10, cap=r.cap)
            except su.HttpError as e:
                code, b = e.kind, b''
            if code != 201:
                refused = '%s %s' % (code, b[:80].decode(errors='replace').strip())
                break
        if refused is None:
            # SQLite found room in pages it already had (free pages, WAL
            # frames): the full disk did not bite this time; not a failure
            self.disk_no_bite += 1
        elif code != 503:
            self.disk_bad.append('the first refused publish on a full disk: %s' % refused)
        self.disk_full_n += 1
        variant = 'abc'[(self.disk_full_n - 1) % 3]
        extra = ''
        if variant == 'b':
            time.sleep(hold / 2)
            w = self.t.workers()
            su.kill_snap(su.snapshot(w))
            extra = ', every worker SIGKILLed while full (%s)' % w
            time.sleep(hold / 2)
        elif variant == 'c':
            extra = ', ' + self.t.restart_backend()
            time.sleep(hold)
        else:
            time.sleep(hold)
        os.unlink(self.filler)
        self.disk_freed.append((now(), variant))
        return ('(%s) tmpfs filled (%d MB filler, %d KB left); the %s big publish was refused '
                '(%s); held %.1f s%s, then freed' % (
                    variant, n >> 20, st.f_bavail * st.f_frsize >> 10, ordinal(sent),
                    refused or 'NONE refused', hold, extra))


def ordinal(n):
    return '%d%s' % (n, 'th' if 10 <= n % 100 < 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th'))


class Monitor(threading.Thread):
    """Samples the number of live holdfast worker processes every 0.1 s."""

    def __init__(self, run):
        super().__init__(daemon=True, name='monitor')
        self.run_ = run
        self.samples = []

    def run(self):
        r = self.run_
        while not r.stop_all.is_set() and len(self.samples) < 200000:
            try:
                n = len(r.t.workers())
            except Exception:  # noqa: BLE001 -- a process gone while looked at
                n = -1
            self.samples.append((now(), n))
            time.sleep(0.1)

    def refill_time(self, t1, full):
        """Seconds from t1 until the pool had `full` workers again (None: never)."""
        after = [(t, n) for t, n in self.samples if t >= t1]
        dip = next((t for t, n in after if n < full and t <= t1 + 1), None)
        if dip is None:
            return 0.0
        for t, n in after:
            if t > dip and n >= full:
                return t - t1
        return None


# ---- checking ----------------------------------------------------------------------------

def verify(run, pubs, subs):
    acked = {}                 # id -> (channel, payload)
    conflicts = []
    by_payload = {}
    for p in pubs:
        for ch, mid, payload, _ in p.acks:
            if mid in acked and acked[mid] != (ch, payload):
                conflicts.append((mid, acked[mid], (ch, payload)))
            acked[mid] = (ch, payload)
            by_payload[payload] = mid
    unacked_payloads = {}
    for p in pubs:
        for ch, payload, _, _ in p.unacked:
            unacked_payloads[payload] = ch
    res = collections.Counter()
    examples = collections.defaultdict(list)

    def ex(kind, what):
        if len(examples[kind]) < 5:
            examples[kind].append(what)

    for s in subs:
        if s.start_cursor is None:
            res['never_started'] += 1
            ex('never_started', 'sub%d' % s.idx)
            continue
        res['deliveries'] += len(s.record)
        seen = set()
        last = s.start_cursor
        for mid, ch, data in s.record:
            if not isinstance(mid, int):
                res['malformed'] += 1
                continue
            if mid in seen:
                res['duplicates'] += 1
                ex('duplicates', 'sub%d id %d delivered twice' % (s.idx, mid))
                continue
            seen.add(mid)
            if mid <= last:
                res['reorders'] += 1
                ex('reorders', 'sub%d id %d after %d' % (s.idx, mid, last))
            last = max(last, mid)
            if mid <= s.start_cursor:
                res['before_start'] += 1
                ex('before_start', 'sub%d id %d <= start cursor %d' % (s.idx, mid, s.start_cursor))
            if mid in acked:
                if acked[mid] != (ch, data):
                    res['corrupt'] += 1
                    ex('corrupt', 'sub%d id %d: got %r, acked %r' % (s.idx, mid, (ch, data),
                                                                   acked[mid]))
            elif data in by_payload:
                # the same message appended twice: a retry not recognised as one
                res['duplicates'] += 1
                res['duplicate_appends'] += 1
                ex('duplicates', 'sub%d id %d carries %r, acked as id %d (idempotency '
                   'failed)' % (s.idx, mid, data, by_payload[data]))
            elif data in unacked_payloads:
                res['delivered_unacked'] += 1
            else:
                res['phantom'] += 1
                ex('phantom', 'sub%d id %d %r: never published' % (s.idx, mid, data))
        excused = []
        for before, oldest in s.gaps:
            if isinstance(oldest, int) and isinstance(before, int):
                excused.append((before, oldest))
        res['gaps'] += len(s.gaps)
        for mid in sorted(acked):
            ch, _ = acked[mid]
            if ch not in s.channels or mid <= s.start_cursor or mid in seen:
                continue
            if any(b < mid < o for b, o in excused):
                res['gap_excused'] += 1
                continue
            res['lost'] += 1
            if s.cursor is not None and mid > s.cursor:
                res['lost_not_caught_up'] += 1
            ex('lost', 'sub%d (%s, start %d, cursor %s) never got id %d' % (
                s.idx, ','.join(s.channels), s.start_cursor, s.cursor, mid))
        res['resets'] += len(s.resets)
        for r_ in s.resets[:2]:
            ex('resets', 'sub%d: %r' % (s.idx, r_))
        res['epoch_changes'] += len(s.epoch_changes)
        res['cursor_regressions'] += len(s.cursor_regressions)
        for c in s.cursor_regressions[:2]:
            ex('cursor_regressions', 'sub%d: %r' % (s.idx, c))
        res['foreign'] += len(s.foreign)
        res['bad_answers'] += len(s.bad_answers)
        for b in s.bad_answers[:2]:
            ex('bad_answers', 'sub%d: %r' % (s.idx, b))
        res['not_caught_up'] += 0 if s.caught_up else 1
        if not s.caught_up:
            ex('not_caught_up', 'sub%d cursor %s, targets %s, %s' % (
                s.idx, s.cursor, {c: run.targets.get(c) for c in s.channels},
                'in a request sent %.1f s before the end' % (now() - s.sent_at)
                if s.in_request and s.sent_at else 'not in a request'))
    res['acked'] = len(acked)
    res['conflicts'] = len(conflicts)
    for c in conflicts[:3]:
        ex('conflicts', repr(c))
    for p in pubs:
        res['unacked'] += len(p.unacked)
        for u in p.unacked[:3]:
            ex('unacked', 'pub%d: %r' % (p.idx, u))
        res['rejected'] += len(p.rejected)
        for u in p.rejected[:3]:
            ex('rejected', 'pub%d: %r' % (p.idx, u))
        res['idem_mismatch'] += len(p.idem_mismatch)
        for u in p.idem_mismatch[:3]:
            ex('idem_mismatch', 'pub%d: %r' % (p.idx, u))
        res['ack_order'] += len(p.order_violations)
        for u in p.order_violations[:3]:
            ex('ack_order', 'pub%d: %r' % (p.idx, u))
        res['replays'] += p.replays
        res['attempts'] += p.attempts
        res['retries'] += p.retries
    return res, examples


def outage(run):
    """Longest stretch of the load phase without an acknowledged publish: (s, from, to)."""
    ts = sorted(t for t in run.ack_times if run.load_t0 <= t <= run.load_t1)
    pts = [run.load_t0] + ts + [run.load_t1]
    best = (0.0, run.load_t0, run.load_t0)
    for a, b in zip(pts, pts[1:]):
        if b - a > best[0]:
            best = (b - a, a, b)
    return best


def per_fault(run, monitor=None):
    """For each fault kind (worst over its injections): the longest stretch
    without an ack that overlaps [start, end + 5 s], the time from its end to
    the next ack, and the error answers in the 10 s after it started."""
    ts = sorted(run.ack_times)
    import bisect
    out = collections.OrderedDict()
    for t0, t1, kind, _ in run.faults:
        if t0 > run.load_t1:
            continue          # started as the load ended: nothing to measure against
        d = out.setdefault(kind, {'n': 0, 'stall': 0.0, 'after': 0.0, 'refill': 0.0,
                                  'errors': collections.Counter()})
        d['n'] += 1
        if monitor is not None and run.t.full_pool:
            rt = monitor.refill_time(t1, run.t.full_pool)
            d['refill'] = max(d['refill'], rt if rt is not None else float('inf'))
        i = bisect.bisect_right(ts, t1)
        d['after'] = max(d['after'], (ts[i] - t1) if i < len(ts) else float('inf'))
        pts = [t0] + [t for t in ts if t0 <= t <= t1 + 5] + [ts[i] if i < len(ts) else t1 + 5]
        j = bisect.bisect_right(ts, t0)
        if j > 0:
            pts[0] = ts[j - 1]
        d['stall'] = max([d['stall']] + [b - a for a, b in zip(pts, pts[1:])])
    evs = sorted(run.events)
    starts = sorted((f[0], f[2]) for f in run.faults)
    for t, role, what in evs:
        prior = [k for s, k in starts if s <= t <= s + 10]
        if prior:
            out[prior[-1]]['errors']['%s:%s' % (role, what)] += 1
    return out


# ---- main --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    ap.add_argument('--server', choices=('nginx', 'apache-fcgid'), required=True)
    ap.add_argument('--bin', default=os.environ.get('HOLDFAST_BIN') or
                    os.path.join(su.TOP, 'holdfast'))
    ap.add_argument('--seconds', type=float, default=60, help='load + chaos phase (default 60)')
    ap.add_argument('--max-requests', type=int, default=0,
                    help='hard cap on HTTP requests (default 4000 per second of load)')
    ap.add_argument('--publishers', type=int, default=4)
    ap.add_argument('--subscribers', type=int, default=24)
    ap.add_argument('--rate', type=float, default=60, help='target publishes/s, all publishers')
    ap.add_argument('--retain', type=int, default=200, help='retain_messages per channel')
    ap.add_argument('--tmpfs-mb', type=int, default=32)
    ap.add_argument('--max-outage', type=float, default=None,
                    help='longest allowed stretch without an ack (default 15 s)')
    ap.add_argument('--recovery', type=float, default=30,
                    help='seconds the last publishes get after the load (default 30)')
    ap.add_argument('--drain', type=float, default=30,
                    help='seconds subscribers get to catch up after that (default 30)')
    ap.add_argument('--faults', help='only these fault kinds (comma-separated)')
    ap.add_argument('--no-faults', action='store_true', help='load only (a baseline)')
    ap.add_argument('--keep', action='store_true', help='keep the work dir (logs)')
    ap.add_argument('--tmp', default='/tmp', help='where the work dir is made')
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.max_requests = args.max_requests or int(4000 * max(args.seconds, 10))
    args.poll_timeout = (3, 12)
    args.fault_interval = (1.0, 3.0)
    args.stop_hold = (2.0, 4.0)
    args.disk_hold = (2.0, 4.0)
    args.pub_timeout = 6.0
    args.replay_fraction = 0.05
    bound = args.max_outage if args.max_outage is not None else 15.0
    name = args.server

    # Workers are made to crash (SIGABRT): no core files from them.
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() != 0:
        print('soak %s: needs root (it mounts a tmpfs for the database)' % name)
        return 2
    if not os.access(args.bin, os.X_OK):
        print('soak %s: no holdfast binary at %s' % (name, args.bin))
        return 2
    need = dt.NGINX if name == 'nginx' else dt.APACHE
    if not os.access(need, os.X_OK) or (name == 'apache-fcgid' and not os.path.exists(
            os.path.join(dt.APACHE_MODULES, 'mod_fcgid.so'))):
        print('soak %s: web server missing (%s%s); deploy/install-deps.sh test installs it' % (
            name, need, '' if name == 'nginx' else ', mod_fcgid'))
        return 2

    root = tempfile.mkdtemp(prefix='hf-soak-', dir=args.tmp)
    os.chmod(root, 0o755)
    mounted = None
    target = None
    rc = 1

    def on_signal(signum, _frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, on_signal)
    chaos = None
    try:
        dep, target = make_target(args, root)
        uid, gid = dt.RUN_AS or (os.getuid(), os.getgid())
        su.mount_tmpfs(dep.data, args.tmpfs_mb, uid, gid)
        mounted = dep.data
        dep.own()
        log('%s on 127.0.0.1:%d%s, db %s on a %d MB tmpfs, binary %s, servers as %s' % (
            name, dep.port, dep.base, dep.db, args.tmpfs_mb, args.bin,
            'nobody' if dt.RUN_AS else 'the current user'))
        if not target.start():
            raise RuntimeError('did not start:\n' + dep.log_tail())
        end = now() + 20
        while now() < end and not target.health():
            time.sleep(0.1)
        if not target.health():
            raise RuntimeError('no /health 200 within 20 s:\n' + dep.log_tail())

        run = Run(args, target)
        pubs = [Publisher(run, i) for i in range(args.publishers)]
        subs = []
        lag_for = max(5.0, min(25.0, args.seconds / 3))
        for i in range(args.subscribers):
            chans = [CHANNELS[i % len(CHANNELS)]]
            if i % 4 == 3:
                chans.append(CHANNELS[(i + 1) % len(CHANNELS)])
            lag_at = None
            if i in (4, 8):      # two lagging clients of the busiest channel: they
                lag_at = args.seconds * (0.2 if i == 4 else 0.5)   # may meet a gap
            subs.append(Subscriber(run, i, chans, lag_at, lag_for))
        run.load_t0 = now()
        for s in subs:
            s.start()
        time.sleep(0.5)
        for p in pubs:
            p.start()
        monitor = Monitor(run)
        monitor.start()
        if not args.no_faults:
            chaos = Chaos(run, subs)
            chaos.start()
        # ---- the load + chaos phase
        while now() - run.load_t0 < args.seconds and not run.cap.exceeded:
            time.sleep(0.2)
        run.load_t1 = now()
        run.recovery_deadline = now() + args.recovery
        run.load_over.set()
        log('load over after %.0f s (%d requests); chaos stops, last publishes get %.0f s' % (
            run.load_t1 - run.load_t0, run.cap.n, args.recovery))
        if chaos:
            chaos.join(30)
        findings = (list(chaos.findings) if chaos else []) + target.findings_extra
        for p in pubs:
            p.join(max(1, run.recovery_deadline + 10 - now()))
        for p in pubs:
            for ch, mid, _, _ in p.acks:
                run.targets[ch] = max(run.targets.get(ch, 0), mid)
        # A poll the web server never answers is given up only at its client
        # timeout (its poll timeout + 20 s): mod_fcgid loses a request that
        # waits for a spawn across a graceful restart (its process manager
        # exits without answering, and the Apache child blocks for good).
        # The drain outlasts that timeout, so such a subscriber polls again
        # and catches up instead of counting as losing what it never asked.
        drain = max(args.drain, args.poll_timeout[1] + 20 + 5)
        run.drain_deadline = now() + drain
        run.pubs_done.set()
        for s in subs:
            s.join(max(1, run.drain_deadline + 25 - now()))
        run.stop_all.set()
        for s in subs:
            s.join(5)
        healthy_end = target.health(5)
        workers_end = len(target.workers())
        orphans_alive = su.alive(getattr(target, 'orphans', {}))

        res, examples = verify(run, pubs, subs)
        acks_sorted = sorted(run.ack_times)

        def next_ack(t):
            import bisect
            i = bisect.bisect_right(acks_sorted, t)
            return acks_sorted[i] - t if i < len(acks_sorted) else float('inf')
        disk_rec = [(v, next_ack(t)) for t, v in (chaos.disk_freed if chaos else [])]
        crash_rec = [next_ack(t) for t in (chaos.crash_loop_end if chaos else [])]
        longest, o_from, o_to = outage(run)
        pf = per_fault(run, monitor)

        # ---- report
        print('soak %s: %.0f s of load (+%.0f s recovery, drain), %d requests (cap %d)' % (
            name, run.load_t1 - run.load_t0, now() - run.load_t1, run.cap.n, args.max_requests))
        print('  messages acked:          %d (%d attempts, %d retries, %d replays checked)' % (
            res['acked'], res['attempts'], res['retries'], res['replays']))
        print('  deliveries:              %d to %d subscribers on %d channels' % (
            res['deliveries'], len(subs), len(CHANNELS)))
        faults = chaos.counts if chaos else collections.Counter()
        print('  faults injected:         %d: %s' % (sum(faults.values()), ', '.join(
            '%s %d' % (k, faults[k]) for k in target.kinds)))
        if chaos and chaos.skipped:
            print('  faults skipped (no target at the time): %s' % dict(chaos.skipped))
        print('  losses:                  %d%s' % (res['lost'], ' (%d acked but beyond the '
              'cursor the subscriber reached)' % res['lost_not_caught_up']
              if res['lost_not_caught_up'] else ''))
        print('  duplicates:              %d%s' % (res['duplicates'], ' (%d appended twice)' %
              res['duplicate_appends'] if res['duplicate_appends'] else ''))
        print('  reorders:                %d' % res['reorders'])
        print('  gaps reported:           %d (%d acked messages inside them not delivered, '
              'allowed)' % (res['gaps'], res['gap_excused']))
        print('  resets:                  %d' % res['resets'])
        print('  longest without an ack:  %.1f s (t=%.1f..%.1f s into the load; bound %.0f s)' % (
            longest, o_from - run.load_t0, o_to - run.load_t0, bound))
        print('  unacknowledged at end:   %d' % res['unacked'])
        print('  publish answers:         %s' % dict(sorted(run.pub_status.items(), key=str)))
        print('  subscribe answers:       %s' % dict(sorted(run.sub_status.items(), key=str)))
        print('  at the end:              /health %s, %d holdfast worker processes%s' % (
            'ok' if healthy_end else 'FAILING', workers_end,
            ', %d orphaned workers of killed supervisors still alive' % len(orphans_alive)
            if name == 'nginx' else ''))
        print('  per fault kind, worst over its injections: longest stretch without an ack '
              'around it | from its end to the next ack%s | error answers in the 10 s after it:'
              % (' | until the pool had %d workers again' % target.full_pool
                 if target.full_pool else ''))
        for kind, d in pf.items():
            errs = ', '.join('%s %d' % kv for kv in d['errors'].most_common(6))
            refill = (' | %5.1f s' % d['refill']) if target.full_pool else ''
            print('    %-16s x%-3d %5.1f s | %5.1f s%s | %s' % (
                kind, d['n'], d['stall'], d['after'], refill, errs or '-'))
        if disk_rec:
            print('  disk full, from freeing the space to the next ack: %s%s' % (', '.join(
                '(%s) %.1f s' % x for x in disk_rec), '; %d of %d times no publish was refused '
                '(SQLite had room in its files)' % (chaos.disk_no_bite, len(disk_rec))
                if chaos.disk_no_bite else ''))
        if crash_rec:
            print('  crash loop, from its end to the next ack: %s' % ', '.join(
                '%.1f s' % x for x in crash_rec))
        for f in findings:
            print('  finding: %s' % f)
        if chaos and chaos.disk_bad:
            print('  full disk answers: %r' % chaos.disk_bad[:3])
        if chaos and chaos.oversize_info:
            print('  note: bodies over FcgidMaxRequestLen (128 KiB) never reach holdfast; Apache '
                  'answered %s' % ', '.join(chaos.oversize_info))
        if chaos and chaos.oversize_bad:
            print('  oversize publishes not answered 413: %r' % chaos.oversize_bad[:3])
        if chaos and chaos.prune_fail:
            print('  prune failures: %r' % chaos.prune_fail[:3])

        checks = [
            ('no message lost', res['lost'] == 0),
            ('no message duplicated', res['duplicates'] == 0),
            ('no message reordered', res['reorders'] == 0),
            ('no reset (the database was never replaced)', res['resets'] == 0),
            ('every publish acknowledged by the end', res['unacked'] == 0),
            ('longest stretch without an ack <= %.0f s' % bound, longest <= bound),
            ('idempotent retries answer 200 with the first id', res['idem_mismatch'] == 0),
            ('no publish rejected', res['rejected'] == 0),
            ('a body over max_body answers 413 body_too_large', not (chaos and chaos.oversize_bad)),
            ('a full disk answers publishes 503', not (chaos and chaos.disk_bad)),
            ('publishing resumes <= %.0f s after the disk is freed' % DISK_RECOVERY,
             all(x <= DISK_RECOVERY for _, x in disk_rec)),
            ('after a crash loop (12 young crashes) the pool serves again: next ack <= %.0f s'
             % CRASH_RECOVERY,
             all(x <= CRASH_RECOVERY for x in crash_rec)),
            ('no worker of a killed supervisor still running at the end', not orphans_alive),
            ('acks of one publisher in increasing id order', res['ack_order'] == 0),
            ('no id acked for two messages', res['conflicts'] == 0),
            ('delivered payloads match the acked ones', res['corrupt'] == 0 and
             res['phantom'] == 0 and res['foreign'] == 0 and res['before_start'] == 0),
            ('cursors never go back, epoch constant', res['cursor_regressions'] == 0 and
             res['epoch_changes'] == 0),
            ('every answer 200 is valid JSON with a cursor', res['bad_answers'] == 0),
            ('every subscriber started and caught up', res['never_started'] == 0 and
             res['not_caught_up'] == 0),
            ('/health answers 200 after the run', healthy_end),
        ]
        failed = [c for c, ok in checks if not ok]
        for c, ok in checks:
            print('  %s - %s' % ('ok  ' if ok else 'FAIL', c))
        for kind, exs in examples.items():
            if kind in ('delivered_unacked',):
                continue
            for e in exs:
                print('    e.g. %s: %s' % (kind, e))
        if run.cap.exceeded:
            print('  note: the request cap stopped the load early')
        print('soak %s: %s' % (name, 'PASS' if not failed else 'FAIL (%d of %d checks: %s)' % (
            len(failed), len(checks), '; '.join(failed))), flush=True)
        rc = 0 if not failed else 1
    except KeyboardInterrupt as e:
        print('soak %s: interrupted (%s)' % (name, e))
        rc = 1
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print('soak %s: FAIL (the harness: %r)' % (name, e))
        rc = 1
    finally:
        if chaos:
            chaos.restore()
        if target is not None:
            stopped = target.stop()
            left = []
            end = now() + 10
            while now() < end:
                left = target.sweep()
                if not left:
                    break
                time.sleep(0.2)
            if left:
                su.kill_snap(left)
                su.wait_gone(left, 5)
            if not stopped or left:
                print('# teardown: servers stopped in time: %s; killed %d leftover processes' % (
                    stopped, len(left)))
        if mounted and not su.umount(mounted):
            print('soak %s: could not unmount the tmpfs at %s' % (name, mounted))
            rc = 1
        if args.keep:
            print('# work dir kept: %s' % root)
        elif mounted is None or not su.is_mounted(mounted):
            shutil.rmtree(root, ignore_errors=True)
    return rc


if __name__ == '__main__':
    sys.exit(main())
