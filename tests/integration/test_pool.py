"""Integration tests of the supervisor of `holdfast serve` (src/pool.c):
workers that die (and why), reloads that cannot start, signals around fork,
a killed supervisor, failing forks, a full filesystem.

Each test gets its own temporary directory, database and server; every
process is stopped (or killed) in the cleanup. Names say what each proves.
Some need root (to run the server as another user, to limit its processes,
to mount a small filesystem) and are skipped without it.
"""
import json
import os
import random
import resource
import signal
import subprocess
import threading
import time
import unittest

import hfutil
from hfutil import (HoldfastServer, collect, close_all, park_many, publish, request, stats,
                    wait_for)

NOBODY = 65534


class PoolServer(HoldfastServer):
    """HoldfastServer that can also run as another user (user=uid) and take
    its address from the config file (listen_flag=False)."""

    def __init__(self, tmpdir, user=None, listen_flag=True, **kw):
        super().__init__(tmpdir, **kw)
        self.user = user
        self.listen_flag = listen_flag

    def start(self, wait=True):
        cmd = [hfutil.holdfast_bin(), 'serve', '--db', self.db, '--workers',
               str(self.workers), '--config', self.config_path]
        if self.listen_flag:
            cmd += ['--listen', self.addr]
        if self.threads:
            cmd += ['--threads', str(self.threads)]
        extra = {}
        if self.user is not None:
            extra = dict(user=self.user, group=self.user, extra_groups=[])
        self.log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log,
                                     start_new_session=True, **extra)
        self.known_pids.add(self.proc.pid)
        hfutil.track(self.known_pids)
        if wait:
            self.wait_ready()
        return self


def cpu_seconds(pid):
    """User + system CPU time of pid so far."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def set_nproc(pid, soft):
    """Set the soft RLIMIT_NPROC of pid (a process of NOBODY); None = up to its
    hard limit. Done as NOBODY: that needs no CAP_SYS_RESOURCE, which root may
    lack here."""
    code = ('import resource, sys; pid = int(sys.argv[1]); '
            'h = resource.prlimit(pid, resource.RLIMIT_NPROC)[1]; '
            'resource.prlimit(pid, resource.RLIMIT_NPROC, (h if sys.argv[2] == "-" else '
            'int(sys.argv[2]), h))')
    subprocess.run(['python3', '-c', code, str(pid), '-' if soft is None else str(soft)],
                   user=NOBODY, group=NOBODY, extra_groups=[], check=True, timeout=10,
                   env=hfutil.clean_env())


def try_publish(addr, data='x', timeout=3):
    """The status of one publish, or the exception's name."""
    try:
        return publish(addr, 'news', data, timeout=timeout)[0]
    except (OSError, hfutil.FcgiError, ValueError) as e:
        return type(e).__name__


class PoolTestBase(unittest.TestCase):

    def setUp(self):
        self.tmp = hfutil.make_tmpdir()
        self.addCleanup(hfutil.remove_tmpdir, self.tmp)
        self.db = os.path.join(self.tmp, 'hf.db')
        soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # crash tests: no core files
        self.addCleanup(resource.setrlimit, resource.RLIMIT_CORE, (soft, hard))

    def serve(self, workers=2, config=None, cls=HoldfastServer, start=True, **kw):
        srv = cls(self.tmp, workers=workers, config=config, db=self.db, **kw)
        self.addCleanup(srv.kill)
        if start:
            srv.start()
        return srv

    def need_root(self):
        if os.geteuid() != 0:
            self.skipTest('needs root')

    def pub(self, srv, data='x', status=201):
        st, j = publish(srv.addr, 'news', data)
        self.assertEqual(st, status, j)
        return j

    def wait_log(self, srv, text, timeout):
        return wait_for(lambda: text in srv.read_log(), timeout, interval=0.1,
                        what='%r in the log' % text)

    def new_workers(self, srv, old, n, timeout=15):
        def replaced():
            now = set(srv.worker_pids())
            return len(now) == n and not (now & set(old)) and now
        new = wait_for(replaced, timeout, what='a new set of %d workers' % n)
        srv.refresh_pids()
        return new


class WorkerDeathTest(PoolTestBase):

    def test_p1_sigkill_every_300ms_never_leaves_the_pool_without_workers(self):
        # Killed from outside is not a worker's fault: no back-off, and no
        # moment without a worker for longer than a respawn.
        srv = self.serve(workers=2)
        ok = []
        stop = threading.Event()

        def publisher():
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                if try_publish(srv.addr, timeout=2) == 201:
                    ok.append(time.monotonic())

        t = threading.Thread(target=publisher)
        t.start()
        t0 = time.monotonic()
        kills = 0
        try:
            while time.monotonic() - t0 < 8:
                pids = srv.worker_pids()
                srv.refresh_pids()
                if pids:
                    try:
                        os.kill(random.choice(pids), signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass
                time.sleep(0.3)
        finally:
            stop.set()
            t.join(10)
        t1 = time.monotonic()
        marks = [t0] + [x for x in ok if t0 <= x <= t1] + [t1]
        gap = max(b - a for a, b in zip(marks, marks[1:]))
        print('\n    %d kills in %.1fs, %d publishes acknowledged, longest stretch without '
              'one %.3fs' % (kills, t1 - t0, len(marks) - 2, gap), end=' ', flush=True)
        self.assertGreater(kills, 20)
        self.assertLess(gap, 1.5, 'no publish acknowledged for %.1fs' % gap)
        self.assertNotIn('replacing it in', srv.read_log())  # no back-off was applied
        srv.wait_ready()
        self.assertEqual(srv.stop(), 0)

    def test_p2_crash_signal_backs_off_its_own_seat_only(self):
        srv = self.serve(workers=2)
        survivor, victim = srv.worker_pids()
        delays = []
        for _ in range(4):
            os.kill(victim, signal.SIGABRT)  # as abort() would: the worker's own fault
            t = time.monotonic()
            nxt = wait_for(lambda: [p for p in srv.worker_pids() if p not in (survivor, victim)],
                           10, interval=0.01, what='a replacement')[0]
            delays.append(time.monotonic() - t)
            srv.refresh_pids()
            victim = nxt
        log = srv.read_log()
        for ms in (100, 200, 400, 800):
            self.assertIn('killed by signal %d; replacing it in %d ms' % (signal.SIGABRT, ms),
                          log)
        self.assertGreater(delays[-1], 0.7, delays)
        self.assertIn(survivor, srv.worker_pids())  # the other seat was never touched
        self.pub(srv)
        self.assertEqual(srv.stop(), 0)

    def test_p2b_last_worker_is_replaced_at_once_whatever_its_back_off(self):
        srv = self.serve(workers=1)
        victim = srv.worker_pids()[0]
        delays = []
        for _ in range(5):
            os.kill(victim, signal.SIGABRT)
            t = time.monotonic()
            victim = wait_for(lambda: [p for p in srv.worker_pids() if p != victim], 10,
                              interval=0.01, what='a replacement')[0]
            delays.append(time.monotonic() - t)
            srv.refresh_pids()
        log = srv.read_log()
        self.assertIn('replacing it in 1600 ms', log)  # the seat's back-off grew...
        self.assertIn('no worker is running; starting one now despite the back-off', log)
        self.assertLess(max(delays), 0.8, delays)      # ...but the pool was never empty long
        self.pub(srv)
        self.assertEqual(srv.stop(), 0)

    def test_p3_fork_that_keeps_failing_is_retried_without_spinning(self):
        # RLIMIT_NPROC binds only a process that is not root: run as nobody.
        self.need_root()
        os.chmod(self.tmp, 0o777)
        srv = self.serve(workers=2, cls=PoolServer, user=NOBODY)
        pid = srv.proc.pid
        set_nproc(pid, 1)  # no more forks
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        # Reaped, so every thread of it is gone (a connection made while one
        # still exits can lose its EPOLLEXCLUSIVE wake-up to it: see the report).
        self.wait_log(srv, 'worker %d killed by signal 9' % victim, 5)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        statuses = []
        while time.monotonic() - t0 < 3:
            statuses.append(try_publish(srv.addr))
            time.sleep(0.1)
        cpu = cpu_seconds(pid) - c0
        tries = srv.read_log().count('cannot start a worker')
        print('\n    supervisor CPU %.2fs in 3s, %d fork attempts logged' % (cpu, tries),
              end=' ', flush=True)
        self.assertLess(cpu, 0.5, 'the supervisor spins on a failing fork')
        self.assertTrue(2 <= tries <= 20, tries)
        self.assertEqual(set(statuses), {201}, statuses)  # the other worker serves on
        set_nproc(pid, None)
        wait_for(lambda: len(srv.worker_pids()) == 2, 5, what='the seat refilled')
        srv.refresh_pids()
        self.assertEqual(srv.stop(), 0)


class ReloadTest(PoolTestBase):

    def test_p4_reload_that_cannot_start_keeps_the_running_workers(self):
        # A database the new workers cannot write: they never say ready, so
        # the old ones must keep serving (with their settings) until an
        # administrator fixes it and reloads again. Root ignores chmod, so the
        # server runs as nobody.
        self.need_root()
        os.chmod(self.tmp, 0o777)
        srv = self.serve(workers=2, config={'max_body': '1k'}, cls=PoolServer, user=NOBODY)
        self.pub(srv)
        old = set(srv.worker_pids())
        os.chmod(self.db, 0o444)
        hfutil.write_config(srv.config_path, {'max_body': '2k'})
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGHUP)
        answers = []
        failed_at = None
        while time.monotonic() - t0 < 16:
            answers.append((time.monotonic() - t0, try_publish(srv.addr)))
            if failed_at is None and 'reload failed: new workers did not become ready' in \
                    srv.read_log():
                failed_at = time.monotonic() - t0
            if failed_at is not None and time.monotonic() - t0 > failed_at + 1:
                break
            time.sleep(0.1)
            srv.refresh_pids()
        log = srv.read_log()
        self.assertIsNotNone(failed_at, 'the reload never gave up:\n' + log)
        self.assertIn('reload failed: new workers did not become ready (see above); keeping '
                      'the running ones', log)
        self.assertLess(failed_at, 13)
        self.assertTrue(old <= set(srv.worker_pids()), 'the old workers were stopped')
        wait_for(lambda: set(srv.worker_pids()) == old, 12, what='only the old workers left')
        # Every request was answered; the old workers acknowledged publishes
        # throughout (a new worker that cannot open the log may say 503).
        bad = [a for a in answers if a[1] not in (201, 503)]
        self.assertEqual(bad, [], answers)
        self.assertEqual([a for a in answers if a[0] > failed_at + 0.5 and a[1] != 201], [])
        self.assertGreater(sum(a[1] == 201 for a in answers), len(answers) // 2, answers)
        # The old settings stay, also for a worker that replaces an old one.
        st, _, _ = request(srv.addr, 'POST', '/pub/news', body=b'y' * 1500)
        self.assertEqual(st, 413)
        victim = sorted(old)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids(), 10,
                 what='the killed old worker replaced')
        srv.refresh_pids()
        for _ in range(4):  # whichever worker answers
            st, _, _ = request(srv.addr, 'POST', '/pub/news', body=b'y' * 1500)
            self.assertEqual(st, 413)
        # Fixed: the next reload goes through.
        os.chmod(self.db, 0o644)
        now = set(srv.worker_pids())
        srv.proc.send_signal(signal.SIGHUP)
        self.new_workers(srv, now, 2)
        st, _, b = request(srv.addr, 'POST', '/pub/news', body=b'y' * 1500)
        self.assertEqual(st, 201, b)
        self.assertEqual(srv.stop(), 0)

    def test_p5_invalid_settings_on_reload_change_nothing(self):
        srv = self.serve(workers=2, config={'max_body': '1k'})
        old = set(srv.worker_pids())
        hfutil.write_config(srv.config_path, 'max_body = lots\n')
        srv.proc.send_signal(signal.SIGHUP)
        self.wait_log(srv, 'reload failed; keeping the running settings', 5)
        time.sleep(0.3)
        self.assertEqual(set(srv.worker_pids()), old)
        victim = sorted(old)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids(), 10,
                 what='a replacement')
        srv.refresh_pids()
        for _ in range(4):
            st, _, _ = request(srv.addr, 'POST', '/pub/news', body=b'y' * 1500)
            self.assertEqual(st, 413)
        self.assertEqual(srv.stop(), 0)

    def test_p6_reload_cannot_move_the_socket_and_stop_removes_the_bound_one(self):
        a = os.path.join(self.tmp, 'a.sock')
        b = os.path.join(self.tmp, 'b.sock')
        srv = self.serve(workers=1, config={'listen': 'unix:' + a}, cls=PoolServer,
                         listen_flag=False, listen='unix:' + a)
        old = srv.worker_pids()
        hfutil.write_config(srv.config_path, {'listen': 'unix:' + b})
        srv.proc.send_signal(signal.SIGHUP)
        self.new_workers(srv, old, 1)
        self.assertIn('listen stays unix:' + a, srv.read_log())
        self.pub(srv)
        self.assertFalse(os.path.exists(b))
        self.assertEqual(srv.stop(), 0)
        self.assertFalse(os.path.exists(a), 'the socket file was left behind')

    def test_p7_old_worker_that_ignores_sigterm_is_killed_after_the_grace(self):
        srv = self.serve(workers=1)
        old = srv.worker_pids()[0]
        os.kill(old, signal.SIGSTOP)  # cannot act on its SIGTERM
        srv.proc.send_signal(signal.SIGHUP)
        self.wait_log(srv, 'settings reloaded', 10)
        t0 = time.monotonic()
        self.assertTrue(hfutil.wait_pids_gone([old], 14), 'the stopped old worker lives on')
        took = time.monotonic() - t0
        self.assertGreater(took, 8)
        self.assertIn('worker %d still runs 10 s after SIGTERM; killing it' % old,
                      srv.read_log())
        self.pub(srv)
        self.assertEqual(srv.stop(), 0)


class SignalTest(PoolTestBase):

    def test_p8_sigterm_right_after_workers_are_forked_is_not_lost(self):
        # SIGHUP forks a new generation; a SIGTERM a moment later reaches
        # workers that may not have installed their handlers yet. Each must
        # still stop at once (not after the 10 s grace and a SIGKILL).
        for i, delay in enumerate((0, 0.0005, 0.001, 0.002, 0.004, 0.008)):
            srv = self.serve(workers=4)
            srv.proc.send_signal(signal.SIGHUP)
            time.sleep(delay)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            try:
                rc = srv.proc.wait(15)
            except subprocess.TimeoutExpired:
                rc = None
            took = time.monotonic() - t0
            log = srv.read_log()
            self.assertEqual(rc, 0, log)
            self.assertLess(took, 5, 'round %d: SIGTERM %.4fs after SIGHUP took %.1fs to stop:'
                            '\n%s' % (i, delay, took, log))
            self.assertNotIn('killing', log)
            srv.stop()
            os.unlink(srv.log_path)

    def test_p9_killed_supervisor_leaves_no_worker_and_a_new_one_serves(self):
        srv = self.serve(workers=2)
        head = self.pub(srv)['id']
        workers = srv.worker_pids()
        conns = park_many(srv.addr, 4, '/sub/news', 'since=%d&timeout=30' % head, spread=True)
        self.addCleanup(close_all, conns)
        wait_for(lambda: stats(srv.addr)['parked'] == 4, 10, what='4 parked')
        srv.proc.kill()
        srv.proc.wait(5)
        t0 = time.monotonic()
        answers = collect(conns, 12)
        for a in answers:
            self.assertIsNotNone(a, 'a parked subscriber of an orphaned worker got no answer')
            self.assertEqual(a[0], 200, a[2])
            self.assertEqual(json.loads(a[2])['cursor'], head)
        self.assertTrue(hfutil.wait_pids_gone(workers, max(0.5, 12 - (time.monotonic() - t0))),
                        'workers outlived their supervisor')
        srv2 = self.serve(workers=2)  # same socket path
        mid = self.pub(srv2)['id']
        st, _, b = request(srv2.addr, 'GET', '/sub/news', 'since=0&timeout=0')
        self.assertEqual(st, 200, b)
        self.assertEqual([m['id'] for m in json.loads(b)['messages']], [head, mid])
        self.assertEqual(srv2.stop(), 0)


class FullDiskTest(PoolTestBase):

    def mount_small(self, size='1m'):
        self.need_root()
        d = os.path.join(self.tmp, 'small')
        os.mkdir(d)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs', d],
                           capture_output=True)
        if r.returncode != 0:
            self.skipTest('cannot mount a tmpfs: %s' % r.stderr.decode().strip())
        self.addCleanup(subprocess.run, ['umount', '-l', d], capture_output=True)
        return d

    @staticmethod
    def fill(d):
        # Unbuffered: a failed write leaves nothing for close() to retry.
        with open(os.path.join(d, 'filler'), 'wb', buffering=0) as f:
            try:
                for _ in range(1 << 16):  # bounded: 1 GiB at most
                    f.write(b'\0' * 16384)
                    f.flush()
            except OSError:
                pass

    def test_p10_stats_and_metrics_on_a_full_filesystem_do_not_kill_workers(self):
        small = self.mount_small()
        self.db = os.path.join(small, 'hf.db')
        srv = self.serve(workers=2)
        self.pub(srv)
        pids = set(srv.worker_pids())
        self.fill(small)
        errors = []
        for _ in range(5):  # over both workers, as a monitoring scrape would
            try:
                self.assertEqual(len(hfutil.stats_many(srv.addr, 8)), 8)
                for path in ('/stats', '/metrics'):
                    st, _, b = request(srv.addr, 'GET', path)
                    self.assertEqual(st, 200, b)
            except (OSError, hfutil.FcgiError) as e:
                errors.append(repr(e))
        self.assertNotIn('killed by signal', srv.read_log())  # 7: SIGBUS
        self.assertEqual(errors, [])
        self.assertEqual(set(srv.worker_pids()), pids)
        # A worker that starts on the full filesystem and finds no wake file
        # cannot make one, and says so; nothing half-made is left behind.
        os.unlink(self.db + '-wake')
        os.kill(sorted(pids)[0], signal.SIGKILL)
        self.wait_log(srv, 'cannot allocate wake file %s-wake: No space left on device'
                      % self.db, 10)
        self.assertFalse(os.path.exists(self.db + '-wake'))
        self.assertEqual([n for n in os.listdir(small) if 'wake' in n], [])
        for path in ('/stats', '/metrics', '/health'):
            for _ in range(4):
                st, _, b = request(srv.addr, 'GET', path)
                self.assertIn(st, (200, 503), b)
        srv.refresh_pids()
        self.assertNotRegex(srv.read_log(), r'killed by signal (?!9;)')  # only our SIGKILL
        self.assertEqual(srv.stop(), 0)


if __name__ == '__main__':
    unittest.main()


class SharingTest(PoolTestBase):

    def test_p11_parked_subscribers_spread_over_the_workers_of_a_unix_socket(self):
        """On one unix listener, EPOLLEXCLUSIVE woke the same worker for
        nearly every connection: with 2 workers of max_parked 50, 90
        subscribers got ~40 503s while the other worker held a handful.  The
        workers share them now: every one parks, neither holds all."""
        srv = self.serve(workers=2, config={'max_parked': '50'})
        conns = []
        self.addCleanup(close_all, conns)
        for _ in range(9):   # in bursts, as re-polls arrive
            conns += park_many(srv.addr, 10, '/sub/share', 'timeout=30')
            time.sleep(0.05)
        hfutil.wait_for(lambda: stats(srv.addr)['parked'] + stats(srv.addr)['refused'] >= 90,
                        15, what='90 subscribers parked or refused')
        st = stats(srv.addr)
        split = sorted(w['waiting'] for w in st['workers'])
        self.assertEqual((st['parked'], st['refused']), (90, 0), split)
        self.assertGreaterEqual(split[0], 30, split)
        self.assertEqual(publish(srv.addr, 'share', 'x')[0], 201)
        answers = collect(conns, 15)
        self.assertEqual([a[0] if a else None for a in answers], [200] * 90)

    def test_p12_a_sibling_that_does_not_accept_never_strands_a_connection(self):
        """A worker that holds many subscribers yields to an emptier sibling;
        if that sibling is alive but not accepting (stopped here; a new
        worker not yet ready is the same), queued connections are taken by
        the yielding worker anyway."""
        srv = self.serve(workers=2)
        stopped, running = srv.worker_pids()
        hfutil.stop_process(stopped)  # stopped for sure before the first connection
        self.addCleanup(lambda: os.kill(stopped, signal.SIGCONT))
        conns = []
        self.addCleanup(close_all, conns)
        for _ in range(4):
            conns += park_many(srv.addr, 10, '/sub/strand', 'timeout=30')
        hfutil.wait_for(lambda: stats(srv.addr)['parked'] >= 40, 20, what='40 parked')
        waiting = {w['pid']: w['waiting'] for w in stats(srv.addr)['workers']}
        self.assertEqual(waiting.get(running), 40, waiting)
        for _ in range(5):   # the running worker yields now, but still answers
            self.assertEqual(request(srv.addr, 'GET', '/health', timeout=5)[0], 200)
        self.assertEqual(publish(srv.addr, 'strand', 'x')[0], 201)
        answers = collect(conns, 15)
        self.assertEqual([a[0] if a else None for a in answers], [200] * 40)
