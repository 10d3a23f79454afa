#!/usr/bin/env python3
"""deploy_test.py -- holdfast behind every web server it ships a configuration for.

For each deployment under deploy/ this starts the real web server (and
`holdfast serve` where the deployment uses the pool) on 127.0.0.1 and a free
port, from the configuration files *shipped in deploy/*, with only their
placeholders substituted (paths, port, publish key): a shipped file that
breaks fails here.  Against each it runs one conformance scenario:

  health            GET /health answers 200 "ok" (the route reached holdfast)
  PATH_INFO         the route comes from PATH_INFO, decoded by the web server
                    (/sub/a%2Cb is two channels), not from holdfast's fallback
  pub+sub           a parked subscriber is answered by a publish, well before
                    its poll would time out, with exactly that message
  event stream      GET /sub with Accept: text/event-stream; three messages
                    published one by one, each event through the web server
                    within 1 s of its publish (a buffering server fails)
  batch             five messages published, then one subscribe with the
                    cursor before them: one answer carries all five, in order
  resume            a client that drops mid-poll and comes back with its
                    cursor gets exactly the messages it missed, once
  timeout           a poll that times out: 200, "messages": [], a cursor
  fan-out           50 subscribers parked at once, all answered by one publish
  errors            400 bad channel, 401 no Authorization, 403 wrong key (the
                    header reached holdfast), 404 unknown route
  config            the database is where the shipped config says, and the
                    settings file is not served (where it lives in the web root)
  stop              the server stops and leaves no process behind

The FastCGI deployments (not the plain-CGI ones, and of the three mod_fcgid
layouts only the vhost) are then put through hostile input (see hostile()):
a body far over max_body, params over 64 KiB, bad channels and cursors,
uploads one byte per second and dropped half-way, and 500 parked subscribers
dropped at once.  Each must get its documented status *through the web
server*, and afterwards a publish reaches a parked subscriber at once and
the holdfast workers (where the test can see them) are the same processes.

Run as root, every server process runs as the user `nobody` (Apache refuses
to run as root, and it is what a shared host looks like); otherwise as the
current user.  Prints "ok - ..." / "FAIL - ..." per check and finally
"N passed, M failed"; exit status 1 on any failure.

    deploy_test.py [--bin PATH] [--only NAME[,NAME...]] [--keep] [--no-hostile]
"""
import argparse
import http.client
import json
import re
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(TOP, 'deploy')
APACHE = '/usr/sbin/apache2'
APACHE_MODULES = '/usr/lib/apache2/modules'
LIGHTTPD = '/usr/sbin/lighttpd'
NGINX = '/usr/sbin/nginx'

KEY = 'test-key-' + os.urandom(8).hex()
FANOUT = 50
HOSTILE = True          # --no-hostile: the conformance scenario only


# ---- results ------------------------------------------------------------------

class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()

    def check(self, name, cond, detail=''):
        with self.lock:
            if cond:
                self.passed += 1
                print('ok - %s%s' % (name, ' (%s)' % detail if detail else ''), flush=True)
            else:
                self.failed += 1
                print('FAIL - %s%s' % (name, ': %s' % detail if detail else ''), flush=True)
        return bool(cond)


R = Results()


# ---- processes ------------------------------------------------------------------

def run_as():
    """(uid, gid) for the servers: nobody when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam('nobody')
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


RUN_AS = run_as()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith('HOLDFAST_')}
    env['PATH'] = env.get('PATH', '/usr/bin:/bin') + ':/usr/sbin:/sbin'
    env.update(extra)
    return env


def spawn(argv, log, cwd=None, env=None):
    """Start a server in its own session (its descendants can be found by it)."""
    kw = {}
    if RUN_AS:
        kw = {'user': RUN_AS[0], 'group': RUN_AS[1], 'extra_groups': []}
    out = open(log, 'ab')
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env or clean_env(),
                                start_new_session=True, **kw)
    finally:
        out.close()


def procs_of(sid, marker):
    """Live processes in session `sid`, or whose command line names `marker`."""
    found = []
    me = os.getpid()
    for d in os.listdir('/proc'):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                stat = f.read()
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()
        state, session = fields[0], int(fields[3])
        if state == 'Z':
            continue
        if (sid and session == sid) or (marker and marker in cmd):
            found.append((int(d), cmd))
    return found


def count_procs(marker):
    return len(procs_of(None, marker))


def memory_kib(pid):
    """(resident, private) KiB of pid from /proc/PID/smaps_rollup, threads:
    what one mod_fcgid process costs.  (0, 0, 0) when it is gone."""
    rss = private = 0
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                k, _, v = line.partition(':')
                if k == 'Rss':
                    rss = int(v.split()[0])
                elif k in ('Private_Clean', 'Private_Dirty'):
                    private += int(v.split()[0])
        threads = len(os.listdir('/proc/%d/task' % pid))
    except OSError:
        return 0, 0, 0
    return rss, private, threads


def children_of(pid):
    """Live (not zombie) processes whose parent is pid."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(')') + 2:].split()
        if fields[0] != 'Z' and int(fields[1]) == pid:
            out.append(int(d))
    return out


# ---- HTTP -------------------------------------------------------------------------

def req(port, method, path, body=None, headers=None, timeout=30, source='127.0.0.1'):
    """One HTTP request; `source` is the client address (any of 127.0.0.0/8)."""
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout,
                                   source_address=(source, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def client_addr(i):
    """The i-th of many client addresses on loopback (127.0.1.1 ...): tests
    that park many subscribers are many clients, not one over its cap."""
    return '127.0.%d.%d' % (1 + i // 250, 1 + i % 250)


def jbody(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


class Bg(threading.Thread):
    """Run fn in the background; .result is (value, seconds) or the exception."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn = fn
        self.result = None
        self.t0 = None
        self.t1 = None
        self.start()

    def run(self):
        self.t0 = time.monotonic()
        try:
            self.result = self.fn()
        except Exception as e:  # noqa: BLE001 -- reported by the caller
            self.result = e
        self.t1 = time.monotonic()


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(cond, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ---- templating shipped files ------------------------------------------------------

class TemplateError(Exception):
    pass


def template(rel, dst, subs, mode=0o644):
    """deploy/<rel> with each (placeholder, value) substituted, written to dst.
    A placeholder missing from the file is an error: the file changed under us."""
    with open(os.path.join(DEPLOY, rel)) as f:
        text = f.read()
    for old, new in subs:
        if old not in text:
            raise TemplateError('%s: placeholder %r not found' % (rel, old))
        text = text.replace(old, new)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, 'w') as f:
        f.write(text)
    os.chmod(dst, mode)
    return text


def unit_exec_start(unit_text):
    """The ExecStart= command of a systemd unit, as an argv."""
    for line in unit_text.splitlines():
        if line.startswith('ExecStart='):
            return line[len('ExecStart='):].split()
    raise TemplateError('no ExecStart= in the unit')


# ---- one deployment ------------------------------------------------------------------

class Deployment:
    """A temp dir, a port, the processes started for it; subclasses say how."""
    name = '?'
    needs = ()
    settings_url = None     # a path under the web root that must not be served
    flood_test = False      # run per_client_cap() (holdfast.conf gets the cap)
    spawned_marker = None   # cmdline marker of per-request processes (fcgid, CGI)
    pub_base = None         # where the guide has publishers send, when not base
    sse = True              # event streams are on in the shipped settings
    # hostile(): whether it runs, and what this web server documents (see there)
    hostile = False
    big_body_status = 413   # a 4 MiB publish (max_body is 64k)
    big_params = None       # nine 7.8 KB headers: None, a 4xx of the web server's
                            # own; 431, holdfast's (the web server passes them)
    flood = 500             # parked subscribers dropped at once
    flood_timeout = 30      # their ?timeout=
    flood_recover = 5       # seconds until a publish reaches a subscriber again
    drops_upstream = False  # closes holdfast's connection when its client leaves
    serve_proc = None       # `holdfast serve`, for the pool deployments

    def __init__(self, root, binary, attempt=0):
        self.dir = os.path.join(root, self.name + ('.%d' % attempt if attempt else ''))
        self.bin_src = binary
        self.port = None
        self.procs = []      # (Popen, stop signal)
        for d in ('www', 'data', 'run', 'logs', 'conf', 'bin'):
            os.makedirs(os.path.join(self.dir, d))
        self.data = os.path.join(self.dir, 'data')
        self.run = os.path.join(self.dir, 'run')
        self.logs = os.path.join(self.dir, 'logs')
        self.conf = os.path.join(self.dir, 'conf')
        self.www = os.path.join(self.dir, 'www')
        self.bin = os.path.join(self.dir, 'bin', 'holdfast')
        shutil.copy2(binary, self.bin)
        self.db = None        # where the shipped config puts the database
        self.base = None      # URL path prefix of the API

    def p(self, *parts):
        return os.path.join(self.dir, *parts)

    def holdfast_pids(self):
        """The long-lived holdfast processes, or None where they come and go
        (mod_fcgid starts and stops them as it likes)."""
        if self.serve_proc is None:
            return None
        return sorted([self.serve_proc.pid] + children_of(self.serve_proc.pid))

    def own(self):
        """Hand the tree to the server user (when we are root)."""
        if RUN_AS:
            for dirpath, dirnames, filenames in os.walk(self.dir):
                for n in [dirpath] + [os.path.join(dirpath, x) for x in filenames]:
                    os.lchown(n, RUN_AS[0], RUN_AS[1])
        os.chmod(self.dir, 0o755)

    def start_proc(self, argv, log, stop_sig=signal.SIGTERM, **kw):
        p = spawn(argv, os.path.join(self.logs, log), **kw)
        self.procs.append((p, stop_sig))
        return p

    def serve_from_unit(self):
        """`holdfast serve` exactly as deploy/systemd/holdfast.service starts it,
        with deploy/systemd/holdfast.conf."""
        sock = self.p('run', 'holdfast.sock')
        template('systemd/holdfast.conf', self.p('conf', 'holdfast.conf'), [
            ('/var/lib/holdfast/holdfast.db', self.p('data', 'holdfast.db')),
            ('/run/holdfast/holdfast.sock', sock),
            # The servers here run as one user and group (see RUN_AS): hand
            # the socket to that group, as the unit hands it to www-data.
            ('listen_group = www-data',
             'listen_group = ' + grp.getgrgid(RUN_AS[1] if RUN_AS else os.getgid()).gr_name),
            ('@PUBLISH_KEY@', KEY)])
        unit = template('systemd/holdfast.service', self.p('conf', 'holdfast.service'), [
            ('/usr/local/bin/holdfast', self.bin),
            ('/etc/holdfast/holdfast.conf', self.p('conf', 'holdfast.conf'))])
        self.db = self.p('data', 'holdfast.db')
        return unit_exec_start(unit), sock

    def wait_socket(self, path, proc, timeout=10):
        return wait_until(lambda: os.path.exists(path) or proc.poll() is not None, timeout) \
            and proc.poll() is None

    def setup(self):
        raise NotImplementedError

    def start(self):
        raise NotImplementedError

    def stop(self):
        """Stop in reverse order of start; True if everything exited in time."""
        ok = True
        for p, sig in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ok = False
        return ok

    def leftovers(self):
        left = []
        for p, _ in self.procs:
            left += procs_of(p.pid, None)
        left += procs_of(None, self.dir)
        return sorted(set(left))

    def kill_leftovers(self):
        for pid, _ in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_tail(self, n=15):
        out = []
        for name in sorted(os.listdir(self.logs)):
            try:
                with open(os.path.join(self.logs, name), errors='replace') as f:
                    lines = f.read().splitlines()[-n:]
            except OSError:
                continue
            if lines:
                out.append('--- %s\n%s' % (name, '\n'.join(lines)))
        return '\n'.join(out)


# ---- Apache -----------------------------------------------------------------------------

def apache_conf(dep, modules, body, docroot=True, extra=''):
    """A private httpd.conf: own ServerRoot, port, pid, logs, fcgid IPC files."""
    mods = ['mpm_event', 'authz_core', 'authn_core', 'mime', 'alias', 'env', 'setenvif'] + modules
    lines = ['ServerRoot %s' % dep.dir,
             'Listen 127.0.0.1:%d' % dep.port,
             'ServerName 127.0.0.1']
    lines += ['LoadModule %s_module %s/mod_%s.so' % (m, APACHE_MODULES, m) for m in mods]
    lines += [
        'TypesConfig /etc/mime.types',
        'PidFile %s' % dep.p('run', 'httpd.pid'),
        'DefaultRuntimeDir %s' % dep.run,
        'ErrorLog %s' % dep.p('logs', 'error.log'),
        'LogLevel warn',
        'Timeout 60',
        # Room for hostile()'s 500 parked subscribers plus the other
        # requests (each holds an Apache thread while it waits).
        'StartServers 1', 'ServerLimit 10', 'ThreadLimit 64', 'ThreadsPerChild 64',
        'MaxRequestWorkers 640', 'MinSpareThreads 16', 'MaxSpareThreads 640',
        'AccessFileName .htaccess',
        '<Directory />', '    AllowOverride None', '    Require all denied', '</Directory>',
        '<Files ".ht*">', '    Require all denied', '</Files>',
    ]
    if 'fcgid' in modules:
        lines += ['FcgidIPCDir %s' % dep.p('run', 'fcgid'),
                  'FcgidProcessTableFile %s' % dep.p('run', 'fcgid_shm')]
    if 'cgid' in modules:
        lines += ['ScriptSock %s' % dep.p('run', 'cgid.sock')]
    if docroot:
        lines += ['DocumentRoot %s' % dep.www,
                  '<Directory %s>' % dep.www,
                  # what a shared host must allow for deploy/apache-fcgid/.htaccess
                  '    AllowOverride Options FileInfo AuthConfig',
                  '    Require all granted',
                  '</Directory>']
    lines += [extra, body]
    path = dep.p('conf', 'httpd.conf')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


class ApacheDeployment(Deployment):
    needs = (APACHE,)

    def install_in_web_folder(self, guide, program):
        """What a shared-hosting user does: the binary as <docroot>/lp/PROGRAM,
        deploy/GUIDE/.htaccess beside it, and its holdfast.conf pointing at a
        data folder outside the web root."""
        lp = self.p('www', 'lp')
        os.makedirs(lp)
        shutil.copy2(self.bin, os.path.join(lp, program))
        os.chmod(os.path.join(lp, program), 0o755)
        shutil.copy2(os.path.join(DEPLOY, guide, '.htaccess'), lp)
        template(guide + '/holdfast.conf', os.path.join(lp, 'holdfast.conf'), [
            ('/home/USER/holdfast-data', self.data), ('@PUBLISH_KEY@', KEY)])
        self.db = os.path.join(self.data, 'holdfast.db')
        self.base = '/lp/' + program

    def start_apache(self):
        return self.start_proc([APACHE, '-f', self.p('conf', 'httpd.conf'), '-DFOREGROUND'],
                               'apache.out')


class ApacheFcgidHtaccess(ApacheDeployment):
    """deploy/apache-fcgid/.htaccess + holdfast.conf, as a shared-hosting user
    installs them: binary copied to <docroot>/lp/holdfast.fcgi."""
    name = 'apache-fcgid-htaccess'
    settings_url = '/lp/holdfast.conf'
    sse = False             # holdfast.conf: sse = off (FcgidOutputBufferSize is the host's)
    spawned_marker = 'holdfast.fcgi'
    flood_test = True

    def setup(self):
        self.install_in_web_folder('apache-fcgid', 'holdfast.fcgi')
        self.copy_as_pub(self.p('www', 'lp', 'holdfast.fcgi'))
        with open(self.p('www', 'lp', 'holdfast.conf'), 'a') as f:
            f.write('max_parked_per_client = 2\n')
        # The admin's part: mod_fcgid's limits are server-config only.  Raised
        # so 50 subscribers (one process each) get their processes at once.
        apache_conf(self, ['fcgid'], '', extra='\n'.join([
            'FcgidMaxProcesses 200', 'FcgidMaxProcessesPerClass 100',
            'FcgidSpawnScoreUpLimit 200']))

    def copy_as_pub(self, program):
        """The guide's pub.fcgi: a copy of program beside it (its own class)."""
        pub = os.path.join(os.path.dirname(program), 'pub.fcgi')
        shutil.copy2(program, pub)
        os.chmod(pub, 0o755)
        self.pub_base = '/lp/pub.fcgi'

    def start(self):
        self.start_apache()


class ApacheFcgidWrapper(ApacheFcgidHtaccess):
    """deploy/apache-fcgid/holdfast-wrapper.fcgi (the suEXEC layout): the
    wrapper in the web folder, the binary and holdfast.conf outside it."""
    name = 'apache-fcgid-wrapper'
    spawned_marker = '/home/holdfast/holdfast'

    def setup(self):
        home = self.p('home')
        os.makedirs(os.path.join(home, 'holdfast'))
        shutil.copy2(self.bin, os.path.join(home, 'holdfast', 'holdfast'))
        template('apache-fcgid/holdfast.conf', os.path.join(home, 'holdfast', 'holdfast.conf'), [
            ('/home/USER/holdfast-data', self.data), ('@PUBLISH_KEY@', KEY)])
        with open(os.path.join(home, 'holdfast', 'holdfast.conf'), 'a') as f:
            f.write('max_parked_per_client = 2\n')
        lp = self.p('www', 'lp')
        os.makedirs(lp)
        template('apache-fcgid/holdfast-wrapper.fcgi', os.path.join(lp, 'holdfast.fcgi'), [
            ('/home/USER', home)], mode=0o755)
        self.copy_as_pub(os.path.join(lp, 'holdfast.fcgi'))
        shutil.copy2(os.path.join(DEPLOY, 'apache-fcgid', '.htaccess'), lp)
        self.db = os.path.join(self.data, 'holdfast.db')
        self.base = '/lp/holdfast.fcgi'
        apache_conf(self, ['fcgid'], '', extra='\n'.join([
            'FcgidMaxProcesses 200', 'FcgidMaxProcessesPerClass 100',
            'FcgidSpawnScoreUpLimit 200']))


class ApacheFcgidAtCap(ApacheFcgidHtaccess):
    """The .htaccess layout with its class at FcgidMaxProcessesPerClass
    (AT_CAP processes, every one holding a waiting subscriber): publishes go
    through pub.fcgi, a second copy of the binary and so mod_fcgid class of
    its own, as the guide ships it.  Runs at_cap() only."""
    name = 'apache-fcgid-at-cap'
    flood_test = False
    hostile = False

    def setup(self):
        self.install_in_web_folder('apache-fcgid', 'holdfast.fcgi')
        self.copy_as_pub(self.p('www', 'lp', 'holdfast.fcgi'))
        apache_conf(self, ['fcgid'], '', extra='\n'.join([
            'FcgidMaxProcesses 40', 'FcgidMaxProcessesPerClass %d' % AT_CAP,
            'FcgidSpawnScoreUpLimit 200']))

    def check(self):
        at_cap(self)


AT_CAP = 4          # apache-fcgid-at-cap: processes per mod_fcgid class
AT_CAP_ROUNDS = 10  # publishes, each with every subscriber process waiting


def at_cap(dep):
    """mod_fcgid at its process cap: AT_CAP subscribers each hold one of
    the class's AT_CAP processes; a publish through holdfast.fcgi would wait
    for a poll to end (a process to come free), one through pub.fcgi (its
    own class) is answered at once and wakes them all.  Reports the
    publish -> delivery latencies; fails if any is over 2 s (a held poll is
    20 s: a publish that waited for one would show it)."""
    n, port = dep.name, dep.port
    lock = threading.Lock()
    got = []            # (subscriber, message id, monotonic arrival)
    stop = threading.Event()
    errors = []

    def follower(i):
        since = 0
        src = client_addr(i)
        while not stop.is_set():
            try:
                st, _, b = req(port, 'GET', '%s/sub/cap?since=%d&timeout=20' % (dep.base, since),
                               timeout=40, source=src)
            except OSError as e:
                errors.append('subscriber %d: %r' % (i, e))
                return
            t = time.monotonic()
            j = jbody(b) if st == 200 else None
            if not j:
                errors.append('subscriber %d: %s %r' % (i, st, b[:200]))
                return
            with lock:
                got.extend((i, m['id'], t) for m in j['messages'])
            since = j['cursor']

    def parked():
        try:
            st, _, b = req(port, 'GET', dep.pub_base + '/stats', timeout=10)
        except OSError:
            return -1
        return (jbody(b) or {}).get('parked', -1) if st == 200 else -1

    subs = [threading.Thread(target=follower, args=(i,), daemon=True) for i in range(AT_CAP)]
    for t in subs:
        t.start()
    full = wait_until(lambda: parked() >= AT_CAP, 30, 0.2)
    procs = procs_of(None, 'holdfast.fcgi')
    mem = [memory_kib(pid) for pid, _ in procs]
    R.check('%s: %d subscribers hold the class\'s %d processes' % (n, AT_CAP, AT_CAP),
            full and len(procs) >= AT_CAP,
            'parked %s, %d holdfast.fcgi processes; each: %s' % (
                parked(), len(procs), ', '.join('%d KiB resident, %d KiB private, %d threads'
                                                % m for m in mem[:1])))
    sent = []           # (id, monotonic before the publish, publish seconds)
    for r in range(AT_CAP_ROUNDS if full else 0):
        if not wait_until(lambda: parked() >= AT_CAP, 10, 0.02):
            errors.append('round %d: only %s parked' % (r, parked()))
            break
        t0 = time.monotonic()
        try:
            st, _, b = req(port, 'POST', dep.pub_base + '/pub/cap', b'round %d' % r,
                           {'Authorization': 'Bearer ' + KEY, 'Content-Type': 'text/plain'},
                           timeout=30)
        except OSError as e:
            errors.append('publish %d: %r after %.1f s' % (r, e, time.monotonic() - t0))
            break
        t1 = time.monotonic()
        if st != 201:
            errors.append('publish %d: %s %r' % (r, st, b[:200]))
            break
        sent.append((jbody(b)['id'], t0, t1 - t0))
        wait_until(lambda: sum(1 for g in got if g[1] == sent[-1][0]) >= AT_CAP, 25, 0.01)
    stop.set()
    # The followers' last polls end by themselves (timeout=20); a last
    # publish answers them at once.
    try:
        req(port, 'POST', dep.pub_base + '/pub/cap', b'end',
            {'Authorization': 'Bearer ' + KEY, 'Content-Type': 'text/plain'}, timeout=30)
    except OSError:
        pass
    for t in subs:
        t.join(30)
    start = {mid: t0 for mid, t0, _ in sent}
    lat = sorted(t - start[mid] for _, mid, t in got if mid in start)
    pubs = sorted(x for _, _, x in sent)
    want = AT_CAP * len(sent)

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float('nan')
    R.check('%s: every publish through pub.fcgi reaches all %d busy subscribers within 2 s'
            % (n, AT_CAP),
            not errors and len(sent) == AT_CAP_ROUNDS and len(lat) == want and lat[-1] < 2,
            '%d publishes, %d of %d deliveries: publish p50 %.0f ms, max %.0f ms; '
            'publish->delivery p50 %.0f ms, p99 %.0f ms, max %.0f ms%s'
            % (len(sent), len(lat), want, pct(pubs, .5), pct(pubs, 1), pct(lat, .5),
               pct(lat, .99), pct(lat, 1), '; ' + '; '.join(errors[:3]) if errors else ''))


class ApacheFcgidVhost(ApacheDeployment):
    """deploy/apache-fcgid/vhost.conf, the root admin's version."""
    name = 'apache-fcgid-vhost'
    spawned_marker = 'holdfast.fcgi'
    hostile = True
    # FcgidMaxRequestLen (default 128 KiB, not set in vhost.conf): mod_fcgid
    # documents that a longer request body "will fail with 500 Server
    # Error", answered by mod_fcgid before holdfast sees the request.
    big_body_status = 500
    # Apache passes the nine header lines (see hostile()), but mod_fcgid
    # sends the params in one record, at most 65535 bytes, and refuses
    # more itself with 500 ("mod_fcgid: can't build begin or env request"
    # in its log): holdfast's 431 (over 64 KiB) cannot be reached here.
    big_params = 500
    # One process per waiting subscriber, and a client that leaves is not
    # noticed while it waits (mod_fcgid 2.3.9, measured): 500 would mean 500
    # processes on this machine.  100 subscribers, the default
    # FcgidMaxProcessesPerClass, with a short poll: each holds its process
    # (and its Apache thread) until the poll ends.
    flood = 100
    flood_timeout = 3
    flood_recover = 20

    def setup(self):
        lib = self.p('lib')
        os.makedirs(lib)
        shutil.copy2(self.bin, os.path.join(lib, 'holdfast.fcgi'))
        shutil.copy2(self.bin, os.path.join(lib, 'pub.fcgi'))
        self.pub_base = '/lp-pub'
        template('apache-fcgid/vhost.conf', self.p('conf', 'vhost.conf'), [
            ('*:80', '127.0.0.1:%d' % self.port),
            ('/var/www/example.org', self.www),
            ('/usr/local/lib/holdfast', lib),
            ('/var/lib/holdfast', self.data),
            ('@PUBLISH_KEY@', KEY)])
        self.db = os.path.join(self.data, 'holdfast.db')
        self.base = '/lp'
        apache_conf(self, ['fcgid'], 'Include %s' % self.p('conf', 'vhost.conf'), docroot=False)

    def start(self):
        self.start_apache()


class ApacheProxyFcgi(ApacheDeployment):
    """deploy/apache-proxy-fcgi/holdfast-proxy.conf to `holdfast serve`."""
    name = 'apache-proxy-fcgi'
    hostile = True
    big_params = 431        # Apache passes them on (see hostile())
    # mod_proxy_fcgi notices a client that left only when it writes the
    # answer (Apache 2.4, measured): each dropped subscriber holds its Apache
    # thread until its poll ends, so the flood polls briefly and service
    # comes back once those threads are free.
    flood_timeout = 3
    flood_recover = 15

    def setup(self):
        self.serve_argv, sock = self.serve_from_unit()
        template('apache-proxy-fcgi/holdfast-proxy.conf', self.p('conf', 'holdfast-proxy.conf'), [
            ('*:80', '127.0.0.1:%d' % self.port),
            ('/var/www/example.org', self.www),
            ('/run/holdfast/holdfast.sock', sock)])
        self.sock = sock
        self.base = '/lp'
        apache_conf(self, ['proxy', 'proxy_fcgi'],
                    'Include %s' % self.p('conf', 'holdfast-proxy.conf'), docroot=False)

    def start(self):
        hf = self.serve_proc = self.start_proc(self.serve_argv, 'holdfast.out')
        if not self.wait_socket(self.sock, hf):
            raise RuntimeError('holdfast serve did not create its socket')
        self.start_apache()


class ApacheCgi(ApacheDeployment):
    """deploy/cgi/.htaccess + holdfast.conf under Apache mod_cgi.  (Debian's
    `a2enmod cgi` loads mod_cgid under the event MPM instead: same handler, but
    see deploy/cgi/GUIDE.md for the one answer it can lose.)"""
    name = 'cgi-apache'
    settings_url = '/lp/holdfast.conf'
    spawned_marker = 'holdfast.cgi'

    def setup(self):
        self.install_in_web_folder('cgi', 'holdfast.cgi')
        apache_conf(self, ['cgi'], '')

    def start(self):
        self.start_apache()


# ---- lighttpd ---------------------------------------------------------------------------

def lighttpd_conf(dep, include):
    lines = [
        'server.document-root = "%s"' % dep.www,
        'server.bind = "127.0.0.1"',
        'server.port = %d' % dep.port,
        'server.errorlog = "%s"' % dep.p('logs', 'error.log'),
        'server.upload-dirs = ( "%s" )' % dep.run,
        'mimetype.assign = ( ".html" => "text/html" )',
        'include "%s"' % include,
    ]
    path = dep.p('conf', 'lighttpd.conf')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


class LighttpdDeployment(Deployment):
    needs = (LIGHTTPD,)
    hostile = True
    # lighttpd 1.4.69 does not close the FastCGI connection of a client that
    # left (measured): the dropped subscribers stay parked in
    # holdfast until their poll ends, which costs holdfast little and
    # blocks nothing.
    flood_timeout = 20

    def start_lighttpd(self):
        return self.start_proc([LIGHTTPD, '-D', '-f', self.p('conf', 'lighttpd.conf')],
                               'lighttpd.out')


class LighttpdSpawn(LighttpdDeployment):
    """deploy/lighttpd/holdfast-spawn.conf: lighttpd starts holdfast (bin-path)."""
    name = 'lighttpd-spawn'

    def holdfast_pids(self):
        """The max-procs holdfast processes lighttpd keeps (by their binary)."""
        return sorted(pid for pid, _ in procs_of(None, self.bin))

    def setup(self):
        inc = self.p('conf', 'holdfast-spawn.conf')
        template('lighttpd/holdfast-spawn.conf', inc, [
            ('/usr/local/bin/holdfast', self.bin),
            ('/run/lighttpd/holdfast', self.p('run', 'holdfast')),
            ('/var/lib/holdfast', self.data),
            ('@PUBLISH_KEY@', KEY)])
        self.db = os.path.join(self.data, 'holdfast.db')
        self.base = '/lp'
        lighttpd_conf(self, inc)

    def start(self):
        self.start_lighttpd()


class LighttpdSocket(LighttpdDeployment):
    """deploy/lighttpd/holdfast-socket.conf to `holdfast serve`."""
    name = 'lighttpd-socket'

    def setup(self):
        self.serve_argv, sock = self.serve_from_unit()
        inc = self.p('conf', 'holdfast-socket.conf')
        template('lighttpd/holdfast-socket.conf', inc, [('/run/holdfast/holdfast.sock', sock)])
        self.sock = sock
        self.base = '/lp'
        lighttpd_conf(self, inc)

    def start(self):
        hf = self.serve_proc = self.start_proc(self.serve_argv, 'holdfast.out')
        if not self.wait_socket(self.sock, hf):
            raise RuntimeError('holdfast serve did not create its socket')
        self.start_lighttpd()


class LighttpdCgi(LighttpdDeployment):
    """deploy/cgi/lighttpd-cgi.conf: lighttpd mod_cgi runs holdfast per request."""
    name = 'cgi-lighttpd'
    settings_url = '/lp/holdfast.conf'
    spawned_marker = 'holdfast.cgi'
    hostile = False         # FastCGI deployments only

    def setup(self):
        lp = self.p('www', 'lp')
        os.makedirs(lp)
        shutil.copy2(self.bin, os.path.join(lp, 'holdfast.cgi'))
        os.chmod(os.path.join(lp, 'holdfast.cgi'), 0o755)
        template('cgi/holdfast.conf', os.path.join(lp, 'holdfast.conf'), [
            ('/home/USER/holdfast-data', self.data), ('@PUBLISH_KEY@', KEY)])
        inc = self.p('conf', 'lighttpd-cgi.conf')
        template('cgi/lighttpd-cgi.conf', inc, [])
        self.db = os.path.join(self.data, 'holdfast.db')
        self.base = '/lp/holdfast.cgi'
        lighttpd_conf(self, inc)

    def start(self):
        self.start_lighttpd()


# ---- nginx ------------------------------------------------------------------------------

class Nginx(Deployment):
    """deploy/nginx/holdfast-site.conf to `holdfast serve`."""
    name = 'nginx'
    needs = (NGINX,)
    hostile = True
    drops_upstream = True   # nginx closes the upstream when its client leaves

    def setup(self):
        self.serve_argv, sock = self.serve_from_unit()
        self.sock = sock
        site = self.p('conf', 'holdfast-site.conf')
        template('nginx/holdfast-site.conf', site, [
            ('listen 80;', 'listen 127.0.0.1:%d;' % self.port),
            ('/var/www/example.org', self.www),
            ('/run/holdfast/holdfast.sock', sock),
            # The shipped 1m already lets bodies over max_body reach holdfast
            # for its 413; 16m lets hostile()'s 4 MiB publish reach it too,
            # which holdfast must read through before it answers.
            ('client_max_body_size 1m;', 'client_max_body_size 16m;')])
        # `include fastcgi_params;` resolves next to the main file, as in /etc/nginx.
        shutil.copy2('/etc/nginx/fastcgi_params', self.p('conf', 'fastcgi_params'))
        tmp = self.p('run', 'nginx')
        os.makedirs(tmp)
        lines = [
            'daemon off;', 'master_process on;', 'worker_processes 1;',
            'pid %s;' % self.p('run', 'nginx.pid'),
            'error_log %s warn;' % self.p('logs', 'error.log'),
            # 500 parked subscribers are 1000 connections (client + upstream)
            'events { worker_connections 4096; }',
            'http {', '    access_log off;',
            '    client_body_temp_path %s/body;' % tmp,
            '    fastcgi_temp_path %s/fastcgi;' % tmp,
            '    proxy_temp_path %s/proxy;' % tmp,
            '    scgi_temp_path %s/scgi;' % tmp,
            '    uwsgi_temp_path %s/uwsgi;' % tmp,
            '    include %s;' % site, '}']
        with open(self.p('conf', 'nginx.conf'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        self.base = '/lp'

    def start(self):
        hf = self.serve_proc = self.start_proc(self.serve_argv, 'holdfast.out')
        if not self.wait_socket(self.sock, hf):
            raise RuntimeError('holdfast serve did not create its socket')
        # -e: nginx 1.22 opens its default error log before reading the config.
        self.start_proc([NGINX, '-c', self.p('conf', 'nginx.conf'), '-p', self.dir + '/',
                         '-e', self.p('logs', 'error.log')], 'nginx.out',
                        stop_sig=signal.SIGQUIT)


DEPLOYMENTS = [ApacheFcgidHtaccess, ApacheFcgidWrapper, ApacheFcgidAtCap, ApacheFcgidVhost,
               ApacheProxyFcgi, LighttpdSpawn, LighttpdSocket, Nginx, ApacheCgi, LighttpdCgi]


# ---- the conformance scenario ---------------------------------------------------------------

def sse_check(n, port, path, publish, rounds=3, limit_s=1.0):
    """GET path as an EventSource would (HTTP/1.0, so no chunking to undo),
    then publish `rounds` messages one by one: each event must arrive
    within limit_s of its publish's acknowledgement, whole and in order --
    what a web server that buffers the answer would fail."""
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    try:
        s.sendall(('GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n'
                   'Authorization: Bearer %s\r\n\r\n' % (path, KEY)).encode())
        data = b''
        deadline = time.monotonic() + 10
        while b'retry:' not in data and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b'\r\n\r\n')
        ok_head = (b' 200 ' in head.split(b'\r\n')[0] and
                   b'text/event-stream' in head.lower() and b'retry:' in body)
        ids, lats, got = [], [], body
        for i in range(rounds if ok_head else 0):
            mid = publish(i)
            t_acked = time.monotonic()
            want = b'id: %d\n' % mid
            while want not in got and time.monotonic() - t_acked < limit_s + 4:
                s.settimeout(max(0.05, limit_s + 4 - (time.monotonic() - t_acked)))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                got += chunk
            lats.append(time.monotonic() - t_acked)
            ids.append(mid)
        seen = [int(x) for x in re.findall(rb'^id: (\d+)$', got, re.M)]
        good = ok_head and seen == ids and all(x < limit_s for x in lats)
        R.check('%s: an event stream delivers each event at once' % n, good,
                'events %s ms after their publish' % ', '.join('%.0f' % (x * 1000) for x in lats)
                if good else 'head %r; ids %s, seen %s, after %s s; got %r' % (
                    head[:300], ids, seen, ['%.2f' % x for x in lats], got[-300:]))
    finally:
        s.close()


def ds_sse_events(port, path, until, timeout=10):
    """GET path (a durable stream's live=sse) over HTTP/1.0 until `until` is in
    what arrived or the connection closes: (head, body bytes)."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        s.sendall(('GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n'
                   % (path, KEY)).encode())
        data, deadline = b'', time.monotonic() + timeout
        while until not in data and time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b'\r\n\r\n')
        return head, body
    finally:
        s.close()


def streams_check(dep):
    """The Durable Streams surface through this web server: create, append,
    read, HEAD, a long-poll woken by an append, closing, an event stream
    whose events arrive as they happen (or 406 where sse = off), and its
    refusals -- every status and the protocol's headers reach the client."""
    n, port = dep.name, dep.port
    name = 'dt.%d' % int(time.time() * 1000)
    url = dep.base + '/v1/stream/' + name
    auth = {'Authorization': 'Bearer ' + KEY}
    text = dict(auth, **{'Content-Type': 'text/plain'})
    try:
        st, h, b = req(port, 'PUT', url, body=b'first ', headers=text)
        ok = st == 201 and h.get('location', '').endswith('/v1/stream/' + name)
        st2, h2, _ = req(port, 'POST', url, body=b'second', headers=text)
        tail = h2.get('stream-next-offset', '')
        st3, h3, b3 = req(port, 'GET', url)
        st4, h4, b4 = req(port, 'HEAD', url)
        good = (ok and st2 == 204 and len(tail) == 33 and st3 == 200 and
                b3 == b'first second' and h3.get('stream-up-to-date') == 'true' and
                h3.get('stream-next-offset') == tail and st4 == 200 and not b4 and
                h4.get('stream-next-offset') == tail)
        R.check('%s: a durable stream is created, appended to and read' % n, good,
                '' if good else 'PUT %s %r, POST %s, GET %s %r %r, HEAD %s %r' % (
                    st, h.get('location'), st2, st3, b3[:80], h3, st4, h4))
        # a long-poll at the tail, answered by the next append
        poll = Bg(lambda: req(port, 'GET', url + '?offset=%s&live=long-poll' % tail))
        time.sleep(1.0)
        early = poll.result is not None
        t0 = time.monotonic()
        req(port, 'POST', url, body=b'third', headers=text)
        poll.join(10)
        lat = time.monotonic() - t0
        r = poll.result
        good = (not early and isinstance(r, tuple) and r[0] == 200 and r[2] == b'third' and
                'stream-cursor' in r[1] and lat < 2)
        R.check('%s: a stream long-poll is answered by the next append' % n, good,
                'after %.0f ms' % (lat * 1000) if good else 'early=%s %r after %.1f s' % (
                    early, r if not isinstance(r, tuple) else (r[0], r[1], r[2][:100]), lat))
        # an event stream from the start: the data so far, then the next append
        if dep.sse:
            got = Bg(lambda: ds_sse_events(port, url + '?offset=-1&live=sse', b'fourth'))
            time.sleep(1.0)
            t0 = time.monotonic()
            req(port, 'POST', url, body=b'fourth', headers=text)
            got.join(12)
            lat = time.monotonic() - t0
            head, body = got.result if isinstance(got.result, tuple) else (b'', b'')
            good = (b' 200 ' in head.split(b'\r\n')[0] and b'text/event-stream' in head and
                    b'event: data\ndata:first second' in body and b'data:fourth' in body and
                    b'event: control' in body and lat < 2)
            R.check('%s: a stream read as SSE gets each append as it happens' % n, good,
                    'after %.0f ms' % (lat * 1000) if good else 'head %r body %r after %.1f s' % (
                        head[:200], body[-300:], lat))
        else:
            st, _, b = req(port, 'GET', url + '?offset=-1&live=sse', timeout=10)
            R.check('%s: a stream read as SSE is refused with 406 (sse = off)' % n,
                    st == 406 and (jbody(b) or {}).get('error') == 'not_acceptable',
                    '%s %r' % (st, b[:200]))
        # closing, and what a closed stream answers
        st, h, _ = req(port, 'POST', url, headers=dict(auth, **{'Stream-Closed': 'true'}))
        st2, h2, _ = req(port, 'POST', url, body=b'late', headers=text)
        st3, h3, b3 = req(port, 'GET', url + '?offset=%s&live=long-poll' % h.get(
            'stream-next-offset', ''), timeout=10)
        good = (st == 204 and h.get('stream-closed') == 'true' and st2 == 409 and
                h2.get('stream-closed') == 'true' and st3 == 204 and
                h3.get('stream-closed') == 'true')
        R.check('%s: a closed stream says so: 409 to appends, 204 Stream-Closed to readers' % n,
                good, '' if good else 'close %s %r; append %s %r; poll %s %r' % (
                    st, h, st2, h2, st3, h3))
        # refusals
        sts = [req(port, 'POST', url, body=b'x', headers={'Content-Type': 'text/plain'})[0],
               req(port, 'POST', dep.base + '/v1/stream/dt.missing', body=b'x', headers=text)[0],
               req(port, 'GET', url + '?offset=bogus')[0],
               req(port, 'PUT', url, headers=dict(auth, **{'Content-Type': 'application/json'}))[0],
               req(port, 'DELETE', url, headers=auth)[0],
               req(port, 'GET', url)[0]]
        R.check('%s: stream refusals 401 no key, 404, 400 bad offset, 409 conflict; deleted' % n,
                sts == [401, 404, 400, 409, 204, 404], repr(sts))
    except Exception as e:  # noqa: BLE001
        R.check('%s: a durable stream is created, appended to and read' % n, False, repr(e))


def scenario(dep):
    n = dep.name
    port = dep.port
    P = lambda path: dep.base + path                               # noqa: E731
    auth = {'Authorization': 'Bearer ' + KEY}

    def head(channel):
        st, _, b = req(port, 'GET', P('/sub/%s?timeout=0' % channel))
        j = jbody(b)
        if st != 200 or not j or 'cursor' not in j:
            raise RuntimeError('GET /sub/%s?timeout=0: %s %r' % (channel, st, b[:200]))
        return j['cursor']

    def publish(channel, body, ctype='text/plain', headers=None):
        h = dict(auth)
        h['Content-Type'] = ctype
        h.update(headers or {})
        st, _, b = req(port, 'POST', (dep.pub_base or dep.base) + '/pub/%s' % channel,
                       body=body, headers=h)
        j = jbody(b)
        if st != 201 or not j or 'id' not in j:
            raise RuntimeError('publish to %s: %s %r' % (channel, st, b[:200]))
        return j['id']

    # The timeout answer takes 2 s: let it run while the rest goes on.
    idle = Bg(lambda: req(port, 'GET', P('/sub/idle?timeout=2')))

    # health: the route (PATH_INFO) reached holdfast
    st, _, b = req(port, 'GET', P('/health'))
    R.check('%s: GET /health answers 200 ok' % n, st == 200 and b.strip() == b'ok',
            '%s %r' % (st, b[:200]))

    # The route is PATH_INFO, which web servers decode, and not holdfast's
    # fallback (REQUEST_URI minus SCRIPT_NAME, still percent-encoded): an
    # encoded comma separates two channels only in the former.
    st, _, b = req(port, 'GET', P('/sub/enc.a%2Cenc.b?timeout=0'))
    R.check('%s: the route arrives as PATH_INFO (decoded)' % n, st == 200 and jbody(b),
            '' if st == 200 else '%s %r' % (st, b[:200]))

    # publish + a parked subscriber
    try:
        c = head('news')
        sub = Bg(lambda: req(port, 'GET', P('/sub/news?since=%d&timeout=20' % c)))
        time.sleep(1.0)
        early = sub.result is not None
        t_pub = time.monotonic()
        mid = publish('news', 'hello "world" \u00e9'.encode(), 'text/plain; charset=utf-8')
        t_acked = time.monotonic()
        sub.join(25)
        st, _, b = sub.result
        j = jbody(b)
        lat = sub.t1 - t_acked
        good = (not early and st == 200 and j and [m['id'] for m in j['messages']] == [mid]
                and j['messages'][0]['data'] == 'hello "world" \u00e9' and j['cursor'] == mid
                and lat < 2)
        R.check('%s: a parked subscriber gets the published message' % n, good,
                'the publish took %.0f ms, the answer came %.0f ms after it' % (
                    (t_acked - t_pub) * 1000, max(0, lat) * 1000) if good else
                'early=%s %s %r after %.1f s' % (early, st, b[:300], lat))
    except Exception as e:  # noqa: BLE001
        R.check('%s: a parked subscriber gets the published message' % n, False, repr(e))

    # an event stream: every event flushed through the web server as it happens
    try:
        c = head('sse')
        if dep.sse:
            sse_check(n, port, P('/sub/sse?since=%d' % c),
                      lambda i: publish('sse', b'ev-%d' % i))
        else:  # the documented refusal, at once, so that clients long-poll
            t0 = time.monotonic()
            st, _, b = req(port, 'GET', P('/sub/sse?since=%d' % c),
                           headers={'Accept': 'text/event-stream'}, timeout=10)
            j = jbody(b)
            took = time.monotonic() - t0
            R.check('%s: event streams are refused with 406 at once (sse = off)' % n,
                    st == 406 and j and j.get('error') == 'not_acceptable' and took < 2,
                    '%s %r after %.1f s' % (st, b[:200], took))
    except Exception as e:  # noqa: BLE001
        R.check('%s: an event stream delivers each event at once' % n, False, repr(e))

    # batch after cursor
    try:
        c = head('batch')
        ids = [publish('batch', json.dumps({'n': i}).encode(), 'application/json')
               for i in range(5)]
        st, _, b = req(port, 'GET', P('/sub/batch?since=%d' % c))
        j = jbody(b)
        good = (st == 200 and j and [m['id'] for m in j['messages']] == ids and
                [m['data'] for m in j['messages']] == [{'n': i} for i in range(5)] and
                j['cursor'] == ids[-1])
        R.check('%s: one answer carries every message after the cursor' % n, good,
                '' if good else '%s %r' % (st, b[:400]))
    except Exception as e:  # noqa: BLE001
        R.check('%s: one answer carries every message after the cursor' % n, False, repr(e))

    # resume after a drop mid-poll
    try:
        c = head('resume')
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        s.sendall(('GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' %
                   P('/sub/resume?since=%d&timeout=20' % c)).encode())
        time.sleep(0.5)
        s.close()                                # the client leaves mid-poll
        missed = [publish('resume', b'missed-1'), publish('resume', b'missed-2')]
        st, _, b = req(port, 'GET', P('/sub/resume?since=%d' % c))
        j = jbody(b)
        good = (st == 200 and j and [m['id'] for m in j['messages']] == missed and
                [m['data'] for m in j['messages']] == ['missed-1', 'missed-2'])
        st2, _, b2 = req(port, 'GET', P('/sub/resume?since=%d&timeout=1' % missed[-1]))
        j2 = jbody(b2)
        again = st2 == 200 and j2 and j2['messages'] == []
        R.check('%s: a client that dropped mid-poll resumes with exactly what it missed' % n,
                good and again, '' if good and again else '%s %r / %s %r' %
                (st, b[:300], st2, b2[:200]))
    except Exception as e:  # noqa: BLE001
        R.check('%s: a client that dropped mid-poll resumes with exactly what it missed' % n,
                False, repr(e))

    # timeout answer
    idle.join(20)
    try:
        st, h, b = idle.result
        j = jbody(b)
        took = idle.t1 - idle.t0
        good = (st == 200 and j and j.get('messages') == [] and isinstance(j.get('cursor'), int)
                and 'no-store' in h.get('cache-control', '') and 1.5 <= took < 10)
        R.check('%s: a poll that times out answers 200, messages [], a cursor' % n, good,
                'after %.1f s' % took if good else '%s %r %r after %.1f s' % (st, h, b[:200], took))
    except Exception as e:  # noqa: BLE001
        R.check('%s: a poll that times out answers 200, messages [], a cursor' % n, False,
                repr(idle.result if idle.result is not None else e))

    # 50 parked subscribers, one publish
    try:
        c = head('fan')
        # From addresses of their own (127.0.1.x), as many clients would be:
        # one address is capped at max_parked_per_client.
        subs = [Bg(lambda i=i: req(port, 'GET', P('/sub/fan?since=%d&timeout=25' % c),
                                   source=client_addr(i)))
                for i in range(FANOUT)]
        if dep.spawned_marker:
            # one process per subscriber (idle ones are reused): wait until
            # there are enough for all of them
            t0 = time.monotonic()
            spawned = wait_until(lambda: count_procs(dep.spawned_marker) >= FANOUT, 20, 0.2)
            settle = time.monotonic() - t0
            time.sleep(0.5)
        else:
            spawned, settle = True, 0
            time.sleep(1.5)
        early = sum(1 for s in subs if s.result is not None)
        t_pub = time.monotonic()
        mid = publish('fan', b'to everyone')
        t_acked = time.monotonic()
        for s in subs:
            s.join(max(0.1, t_pub + 20 - time.monotonic()))
        got = 0
        lats = []
        bad = []
        for s in subs:
            r = s.result
            if isinstance(r, tuple) and r[0] == 200:
                j = jbody(r[2])
                if j and [m['id'] for m in j['messages']] == [mid]:
                    got += 1
                    lats.append(s.t1 - t_acked)
                    continue
            bad.append(r if not isinstance(r, tuple) else (r[0], r[2][:120]))
        # Within 2 s of the publish's answer: not by a timeout (25 s) or a
        # slow data_version pass (1 s) repeated.
        good = got == FANOUT and early == 0 and spawned and max(lats) < 2
        R.check('%s: %d parked subscribers all answered by one publish' % (n, FANOUT), good,
                'the publish took %.0f ms; answers %.0f ms (median), %.0f ms (last) after '
                'it%s' % (
                    (t_acked - t_pub) * 1000, max(0, sorted(lats)[len(lats) // 2]) * 1000,
                    max(0, max(lats)) * 1000, '; %d processes up in %.1f s' % (FANOUT, settle)
                    if dep.spawned_marker else '') if good else
                'got %d, early %d, processes up: %s (%.1f s), slowest %.1f s, e.g. %r' % (
                    got, early, spawned, settle, max(lats) if lats else -1, bad[:2]))
    except Exception as e:  # noqa: BLE001
        R.check('%s: %d parked subscribers all answered by one publish' % (n, FANOUT), False,
                repr(e))

    # errors
    try:
        st1, _, b1 = req(port, 'POST', P('/pub/bad!name'), body=b'x', headers=auth)
        st2, _, b2 = req(port, 'POST', P('/pub/news'), body=b'x')
        st3, _, b3 = req(port, 'POST', P('/pub/news'), body=b'x',
                          headers={'Authorization': 'Bearer wrong-key'})
        st4, _, b4 = req(port, 'GET', P('/nope'))
        errs = [(jbody(x) or {}).get('error') for x in (b1, b2, b3, b4)]
        good = ((st1, st2, st3, st4) == (400, 401, 403, 404) and
                errs == ['bad_channel', 'unauthorized', 'forbidden', 'not_found'])
        R.check('%s: errors 400 bad channel, 401 no key, 403 wrong key, 404 route' % n, good,
                '' if good else '%s %s %s %s %r' % (st1, st2, st3, st4, errs))
    except Exception as e:  # noqa: BLE001
        R.check('%s: errors 400 bad channel, 401 no key, 403 wrong key, 404 route' % n, False,
                repr(e))

    # the shipped config was the one in effect
    stray = [os.path.join(d, f) for d, _, fs in os.walk(dep.www) for f in fs
             if '.db' in f]
    R.check('%s: the database is where the shipped config puts it' % n,
            os.path.exists(dep.db) and not stray, '%s exists: %s; in the web root: %s' %
            (dep.db, os.path.exists(dep.db), stray))
    if dep.settings_url:
        st, _, b = req(port, 'GET', dep.settings_url)
        R.check('%s: %s is not served' % (n, dep.settings_url), st == 403 and KEY.encode()
                not in b, 'status %s' % st)
        # A database left in the web folder by mistake is not served either.
        folder = os.path.join(dep.www, os.path.dirname(dep.settings_url).lstrip('/'))
        denied = []
        for f in ('holdfast.db', 'holdfast.db-wal', 'holdfast.db-limits', 'x.sqlite3'):
            with open(os.path.join(folder, f), 'w') as out:
                out.write('SQLite format 3 ' + KEY)
            st, _, b = req(port, 'GET', os.path.dirname(dep.settings_url) + '/' + f)
            denied.append((f, st, KEY.encode() in b))
            os.unlink(os.path.join(folder, f))
        R.check('%s: a database in the web folder is not served' % n,
                all(st == 403 and not leak for _, st, leak in denied), repr(denied))
    streams_check(dep)
    if dep.flood_test:
        per_client_cap(dep)


def per_client_cap(dep):
    """max_parked_per_client under this server: one address flooding
    subscribes gets 429 past the cap (under mod_fcgid each waiting
    subscriber is a process: the cap keeps one client from taking the
    class's budget) while another address is still served."""
    n, port = dep.name, dep.port
    flood = [Bg(lambda: req(port, 'GET', dep.base + '/sub/flood?timeout=15', timeout=30,
                            source='127.0.0.7')) for _ in range(6)]
    time.sleep(3)
    other = Bg(lambda: req(port, 'GET', dep.base + '/sub/flood?timeout=15', timeout=30,
                           source='127.0.0.8'))
    refused = wait_until(lambda: sum(1 for b in flood if isinstance(b.result, tuple) and
                                     b.result[0] == 429) >= 4, 10)
    time.sleep(1)
    st, _, b = req(port, 'POST', dep.base + '/pub/flood', b'x',
                   {'Authorization': 'Bearer ' + KEY, 'Content-Type': 'text/plain'})
    for b_ in flood + [other]:
        b_.join(30)
    got = sorted(b_.result[0] if isinstance(b_.result, tuple) else repr(b_.result)
                 for b_ in flood)
    R.check('%s: one address past max_parked_per_client (2) gets 429, the rest wait' % n,
            refused and got == [200, 200, 429, 429, 429, 429] and st == 201,
            'flood answers %r, publish %s' % (got, st))
    r429 = [b_.result for b_ in flood if isinstance(b_.result, tuple) and b_.result[0] == 429]
    R.check('%s: the 429 has Retry-After and a JSON reason' % n,
            r429 and all('retry-after' in h and (jbody(body) or {}).get('error') ==
                         'too_many_subscribers' for _, h, body in r429), repr(r429[:1]))
    R.check('%s: another address is still served while one floods' % n,
            isinstance(other.result, tuple) and other.result[0] == 200 and
            b'"data":"x"' in other.result[2], repr(other.result)[:200])


# ---- hostile input ------------------------------------------------------------------------

class Sock:
    """An HTTP/1.1 request on a raw socket: the head goes out at once, the
    body from a thread (all of it, or one byte every `pace` seconds, or the
    first `upto` bytes and then the connection is dropped), while the answer
    is read: a server may answer (413) before it has taken the whole body."""

    def __init__(self, port, method, path, headers=None, body=b'', pace=None, upto=None,
                 timeout=30):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        h = {'Host': '127.0.0.1', 'Connection': 'close'}
        h.update(headers or {})
        if body or method == 'POST':
            h['Content-Length'] = str(len(body))
        self.head = ('%s %s HTTP/1.1\r\n' % (method, path) +
                     ''.join('%s: %s\r\n' % kv for kv in h.items()) + '\r\n').encode()
        self.body, self.pace, self.upto = body, pace, upto
        self.stop = threading.Event()
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.sender.start()

    def _send(self):
        try:
            self.s.sendall(self.head)
            body = self.body if self.upto is None else self.body[:self.upto]
            step = 1 if self.pace else 65536
            for off in range(0, len(body), step):
                if self.stop.is_set() or (self.pace and off and self.stop.wait(self.pace)):
                    return
                self.s.sendall(body[off:off + step])
            if self.upto is not None:
                self.s.shutdown(socket.SHUT_RDWR)   # the client leaves mid-body
        except OSError:
            pass                                    # the server closed first: fine

    def answer(self):
        """(status, headers, body) or (None, {}, why) if there was none."""
        try:
            r = http.client.HTTPResponse(self.s)
            r.begin()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        except (OSError, http.client.HTTPException) as e:
            return None, {}, repr(e)
        finally:
            self.close()

    def close(self):
        self.stop.set()
        try:
            self.s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sender.join(5)
        self.s.close()


def hostile(dep):
    """Refused requests get their documented status through the web server,
    and leave holdfast as it was: after each group of them a publish
    reaches a parked subscriber at once, and the holdfast processes are the
    same (no worker died or was replaced)."""
    n = dep.name
    port = dep.port
    P = lambda path: dep.base + path                               # noqa: E731
    auth = {'Authorization': 'Bearer ' + KEY, 'Content-Type': 'text/plain'}
    pids = dep.holdfast_pids()

    def error_of(b):
        return (jbody(b) or {}).get('error')

    def guard(what, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 -- one failed check, then go on
            R.check('%s: %s' % (n, what), False, repr(e))
        service(what)

    def service(what):
        """A normal publish + subscribe works right after `what`."""
        ok, detail = serves(dep, P, auth)
        R.check('%s: after %s, a publish reaches a parked subscriber' % (n, what), ok, detail)
        if pids is not None:
            now = dep.holdfast_pids()
            R.check('%s: after %s, the holdfast processes are the same' % (n, what),
                    now == pids, '%d processes' % len(now) if now == pids else
                    'before %r, now %r' % (pids, now))

    # (a) A publish far over max_body (64k): 413 body_too_large every time.
    # holdfast answers before the body is in, so it must read the rest
    # through before it closes: a socket closed with unread input is reset,
    # and nginx then loses the answer (502).  Through mod_fcgid the 4 MiB
    # never reach holdfast: FcgidMaxRequestLen (128 KiB) answers 500
    # first, as mod_fcgid documents; 100 KiB (over max_body, under
    # FcgidMaxRequestLen) gets holdfast's own 413 everywhere.
    def big_bodies():
        for size, tries, want in ((4 << 20, 20 if n == 'nginx' else 5, dep.big_body_status),
                                  (100 << 10, 5, 413)):
            body = b'x' * size
            got = []
            for _ in range(tries):
                st, _, b = Sock(port, 'POST', P('/pub/big'), auth, body).answer()
                got.append((st, error_of(b) if st == 413 else None))
            good = all(st == want and (want != 413 or e == 'body_too_large') for st, e in got)
            R.check('%s: a %d KiB publish answers %d, %d times of %d' % (
                n, size >> 10, want, sum(1 for st, _ in got if st == want), tries), good,
                '' if good else 'answers: %r' % got)

    # (b) Params over holdfast's 64 KiB.  Every web server caps the request
    # head itself: nginx (large_client_header_buffers 4 8k) answers 400 (it
    # logs 494), lighttpd (server.max-request-field-size 8 KiB) 431, Apache
    # 400 for one line over LimitRequestFieldSize (8190).  Never a 5xx.
    # Apache caps each line, not the sum (LimitRequestFields 100), so nine
    # lines of 7.8 KB reach mod_proxy_fcgi, which sends them as 70 KB of
    # params: 431 headers_too_large, holdfast's own answer (mod_fcgid: see
    # ApacheFcgidVhost.big_params).
    def big_headers():
        one = {'X-Big': 'a' * 60000}
        many = dict(('X-Big-%d' % i, 'b' * 7800) for i in range(9))
        for what, hdrs in (('one 60 KB header', one), ('nine 7.8 KB headers', many)):
            st, _, b = Sock(port, 'GET', P('/sub/big?timeout=0'), hdrs).answer()
            if dep.big_params == 431 and hdrs is many:
                good = st == 431 and error_of(b) == 'headers_too_large'
                R.check('%s: %s reach holdfast: 431 headers_too_large' % (n, what), good,
                        '' if good else '%s %r' % (st, b[:200]))
            elif dep.big_params and hdrs is many:
                good = st == dep.big_params and jbody(b) is None
                R.check('%s: %s: the web server refuses them itself with %d' % (
                    n, what, dep.big_params), good, '' if good else '%s %r' % (st, b[:200]))
            else:
                good = st is not None and 400 <= st < 500
                R.check('%s: %s: a 4xx from the web server, not a 5xx' % (n, what), good,
                        '%s' % st if good else '%s %r' % (st, b[:200]))

    # (c) Refused subscribes (README, Limits).
    def refused():
        chans = ','.join('c%d' % i for i in range(17))
        for path, want, err in (('/sub/%s?timeout=0' % chans, 400, 'too_many_channels'),
                                ('/sub/bad!name?timeout=0', 400, 'bad_channel'),
                                ('/sub/%s?timeout=0' % ('x' * 129), 400, 'bad_channel'),
                                ('/sub/news?since=abc', 400, 'bad_cursor'),
                                ('/sub/news?timeout=soon', 400, 'bad_parameter')):
            st, _, b = req(port, 'GET', P(path))
            R.check('%s: GET %s answers %d %s' % (n, path[:40], want, err),
                    st == want and error_of(b) == err, '%s %r' % (st, b[:200]))

    # (d) Slow and partial uploads.  nginx, lighttpd and mod_fcgid read the
    # whole body before they pass the request on (15 s here, far within
    # their idle timeouts of 60 s): 201.  mod_proxy_fcgi streams it, so
    # holdfast sees a request that is not complete within 10 s: 408
    # request_timeout.  Either way holdfast keeps answering everyone else.
    def slow_uploads():
        slow = [Bg(lambda: Sock(port, 'POST', P('/pub/slow'), auth, b'0123456789abcdef',
                                pace=1.0).answer()) for _ in range(8)]
        lat = []
        for _ in range(5):
            time.sleep(1.0)
            t0 = time.monotonic()
            try:
                st = req(port, 'GET', P('/health'), timeout=5)[0]
            except OSError as e:
                st = repr(e)
            lat.append((time.monotonic() - t0, st))
        good = all(t < 1.0 and st == 200 for t, st in lat)
        R.check('%s: /health answers within 1 s during 8 uploads at 1 byte/s' % n, good,
                'slowest %.0f ms' % (max(t for t, _ in lat) * 1000) if good else repr(lat))
        for s in slow:
            s.join(40)
        got = [s.result[0] if isinstance(s.result, tuple) else repr(s.result) for s in slow]
        R.check('%s: uploads at 1 byte/s answer 201 or 408, never 5xx' % n,
                all(st in (201, 408) for st in got), repr(got))
        partial = [Sock(port, 'POST', P('/pub/partial'), auth, b'p' * 100, upto=5)
                   for _ in range(8)]
        time.sleep(1.0)
        for s in partial:
            s.close()

    guard('bodies over max_body', big_bodies)
    guard('oversize headers', big_headers)
    guard('refused subscribes', refused)
    guard('slow and dropped uploads', slow_uploads)
    # (e) A flood: `flood` subscribers parked at once, then all dropped.
    guard('%d subscribers dropped at once' % dep.flood, lambda: flood(dep, P))


def serves(dep, P, auth):
    """(ok, detail): a parked subscriber gets a publish within 3 s."""
    try:
        st, _, b = req(dep.port, 'GET', P('/sub/after?timeout=0'), timeout=10)
        j = jbody(b)
        if st != 200 or not j:
            return False, 'head: %s %r' % (st, b[:200])
        sub = Bg(lambda: req(dep.port, 'GET', P('/sub/after?since=%d&timeout=10' % j['cursor']),
                             timeout=15))
        time.sleep(0.3)
        st, _, b = req(dep.port, 'POST', P('/pub/after'), b'again', auth, timeout=10)
        t_pub = time.monotonic()
        sub.join(15)
        if st != 201:
            return False, 'publish: %s %r' % (st, b[:200])
        r = sub.result
        if not isinstance(r, tuple) or r[0] != 200:
            return False, 'subscriber: %r' % (r,)
        msgs = [m['data'] for m in (jbody(r[2]) or {}).get('messages', [])]
        lat = sub.t1 - t_pub
        return msgs == ['again'] and lat < 3, '%.0f ms after the publish' % max(0, lat * 1000) \
            if msgs == ['again'] else 'got %r' % r[2][:200]
    except Exception as e:  # noqa: BLE001
        return False, repr(e)


def parked(dep, P):
    try:
        st, _, b = req(dep.port, 'GET', P('/stats'), timeout=5)
        return (jbody(b) or {}).get('parked', -1) if st == 200 else -1
    except OSError:
        return -1


def flood(dep, P):
    """dep.flood subscribers, all parked, then all dropped at once: none is
    refused or answered before it is dropped, and a publish reaches a new
    subscriber within dep.flood_recover seconds of the drop."""
    n, count = dep.name, dep.flood
    path = P('/sub/flood?timeout=%d' % dep.flood_timeout)
    head = ('GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' % path).encode()
    socks, early, most = [], [], 0
    t0 = time.monotonic()
    try:
        for i in range(count):
            s = socket.create_connection(('127.0.0.1', dep.port), timeout=10,
                                         source_address=(client_addr(i), 0))
            socks.append(s)
            s.sendall(head)
        most = 0
        end = time.monotonic() + min(15, max(2, dep.flood_timeout - 1))
        while time.monotonic() < end and most < count:
            most = max(most, parked(dep, P))
            time.sleep(0.2)
        for s in socks:                 # answered before the drop: refused
            s.setblocking(False)
            try:
                data = s.recv(200)
                early.append(data.split(b'\r\n', 1)[0].decode(errors='replace') or 'closed')
            except BlockingIOError:
                pass
            except OSError as e:
                early.append(repr(e))
    finally:
        for s in socks:
            s.close()
    t_drop = time.monotonic()
    up = '%d connected and sent in %.1f s, at most %d parked at once' % (
        len(socks), t_drop - t0, most)
    if dep.flood_timeout > 5:
        # long polls: every one of them was parked in holdfast at once
        R.check('%s: %d subscribers parked at once' % (n, count), most >= count and not early,
                up if most >= count and not early else up + '; answered early: %r' % early[:5])
    else:
        R.check('%s: %d subscribers: none answered before the drop' % (n, count), not early,
                up if not early else up + '; answered early: %r' % early[:5])
    auth = {'Authorization': 'Bearer ' + KEY, 'Content-Type': 'text/plain'}
    ok, detail = False, ''
    while not ok and time.monotonic() - t_drop < dep.flood_recover + 10:
        ok, detail = serves(dep, P, auth)
    took = time.monotonic() - t_drop
    R.check('%s: %d subscribers dropped at once: service again within %d s' % (
        n, count, dep.flood_recover), ok and took <= dep.flood_recover + 3,
        'after %.1f s (%s)' % (took, detail))
    if dep.drops_upstream:
        gone = wait_until(lambda: 0 <= parked(dep, P) < count // 10, 5, 0.2)
        R.check('%s: the dropped subscribers leave holdfast within 5 s' % n, gone,
                '%d still parked' % parked(dep, P))


def run_one(cls, root, binary):
    n = cls.name
    missing = [x for x in cls.needs if not os.path.exists(x)]
    if missing:
        R.check('%s: web server installed' % n, False, 'missing %s (deploy/install-deps.sh test)'
                % ' '.join(missing))
        return
    t0 = time.monotonic()
    started = False
    for attempt in range(3):                 # another test may take the port first
        dep = cls(root, binary, attempt)
        dep.port = free_port()
        try:
            dep.setup()
            dep.own()
            dep.start()
            started = wait_until(lambda: _health(dep) or any(
                p.poll() is not None for p, _ in dep.procs), 15, 0.1) and \
                all(p.poll() is None for p, _ in dep.procs) and _health(dep)
        except Exception as e:  # noqa: BLE001
            R.check('%s: set up from deploy/' % n, False, repr(e))
            dep.stop()
            dep.kill_leftovers()
            return
        if started:
            break
        bound = 'Address already in use' in dep.log_tail(50)
        if not bound:
            break
        dep.stop()
        dep.kill_leftovers()
    R.check('%s: starts on 127.0.0.1:%d' % (n, dep.port), started,
            '' if started else dep.log_tail())
    try:
        if started and hasattr(dep, 'check'):
            dep.check()             # a deployment for one check only
        elif started:
            scenario(dep)
            if dep.hostile and HOSTILE:
                hostile(dep)
    except Exception as e:  # noqa: BLE001 -- a broken check still stops its server
        R.check('%s: its checks ran to the end' % n, False, repr(e))
    stopped = dep.stop()
    left = []
    if wait_until(lambda: not dep.leftovers(), 10, 0.1) is False:
        left = dep.leftovers()
        dep.kill_leftovers()
    R.check('%s: stops, leaving no process behind' % n, stopped and not left,
            '%.1f s for this server' % (time.monotonic() - t0) if stopped and not left else
            'stopped in time: %s; left: %r' % (stopped, left))
    if R.failed and os.environ.get('HOLDFAST_DEPLOY_VERBOSE'):
        print(dep.log_tail(), file=sys.stderr)


def serve_one(name, root, binary):
    cls = {c.name: c for c in DEPLOYMENTS}.get(name)
    if not cls:
        print('unknown deployment %s; known: %s' % (name, ', '.join(c.name for c in DEPLOYMENTS)))
        return 2
    dep = cls(root, binary)
    dep.port = free_port()
    try:
        dep.setup()
        dep.own()
        dep.start()
        if not wait_until(lambda: _health(dep), 15, 0.1):
            print(dep.log_tail())
            return 1
        print('%s: http://127.0.0.1:%d%s/  (publish key %s)' % (name, dep.port, dep.base, KEY))
        print('files and logs in %s; Ctrl-C stops' % dep.dir, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(p.poll() is None for p, _ in dep.procs):
            time.sleep(0.5)
        print('a server exited:\n' + dep.log_tail())
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        dep.stop()
        dep.kill_leftovers()


def _health(dep):
    try:
        st, _, _ = req(dep.port, 'GET', dep.base + '/health', timeout=5)
        return st == 200
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bin', default=os.environ.get('HOLDFAST_BIN') or
                    os.path.join(TOP, 'holdfast'))
    ap.add_argument('--only', help='comma-separated deployment names')
    ap.add_argument('--keep', action='store_true', help='keep the temp dir')
    ap.add_argument('--serve', metavar='NAME',
                    help='only start that deployment, print where it is, and wait for '
                    'Ctrl-C (to poke at it with curl)')
    ap.add_argument('--no-hostile', action='store_true',
                    help='skip the hostile-input checks (see hostile())')
    args = ap.parse_args()
    global HOSTILE
    HOSTILE = not args.no_hostile
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        print('deploy tests: no holdfast binary at %s (build it, or pass its path)' % binary)
        print('0 passed, 1 failed')
        return 1
    names = [c.name for c in DEPLOYMENTS]
    chosen = DEPLOYMENTS
    if args.only:
        want = args.only.split(',')
        unknown = [w for w in want if w not in names]
        if unknown:
            print('unknown deployment(s) %s; known: %s' % (unknown, ', '.join(names)))
            return 2
        chosen = [c for c in DEPLOYMENTS if c.name in want]
    root = tempfile.mkdtemp(prefix='hf-deploy-')
    os.chmod(root, 0o755)
    if args.serve:
        try:
            return serve_one(args.serve, root, binary)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    print('# holdfast deploy tests: %s, servers as %s, in %s' % (
        binary, 'nobody' if RUN_AS else 'the current user', root), flush=True)
    try:
        for cls in chosen:
            run_one(cls, root, binary)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print('# %.0f s' % (time.monotonic() - t0))
    print('%d passed, %d failed' % (R.passed, R.failed))
    return 1 if R.failed else 0


if __name__ == '__main__':
    sys.exit(main())
