"""hfutil.py -- helpers for holdfast's integration tests (standard library only).

  * a minimal FastCGI client (responder role, one request per connection):
      request(addr, method, path, query='', headers={}, body=b'', timeout=10)
          -> (status, headers (lower-cased names), body bytes)
    and a many-at-once API for parking subscribers:
      conns = park_many(addr, n, '/sub/x', 'timeout=30')
      answers = collect(conns, timeout=10)    # list of (status, headers, body) or None
  * process helpers: HoldfastServer (holdfast serve), publish_cli(), run_cgi(),
    Lighttpd (a private lighttpd with mod_fastcgi / mod_cgi), free_port().

Every wait here is bounded in time; every process started here is tracked by
pid and killed by the owner's stop()/teardown.
"""
import http.client
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

# ---- configuration ----------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
LIGHTTPD = '/usr/sbin/lighttpd'


def holdfast_bin():
    """The binary under test: $HOLDFAST_BIN (run.py sets it from --bin), else ./holdfast."""
    b = os.environ.get('HOLDFAST_BIN') or os.path.join(TOP, 'holdfast')
    return os.path.abspath(b)


def clean_env(**extra):
    """The environment for every child: no stray HOLDFAST_* settings of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('HOLDFAST_')}
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ---- FastCGI protocol ---------------------------------------------------------

FCGI_VERSION_1 = 1
FCGI_BEGIN_REQUEST = 1
FCGI_ABORT_REQUEST = 2
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_RESPONDER = 1
FCGI_MAX_CONTENT = 65535


class FcgiError(Exception):
    pass


def fcgi_record(rtype, reqid, content=b''):
    """One record: 8-byte header, content, padding to a multiple of 8."""
    assert len(content) <= FCGI_MAX_CONTENT
    pad = (-len(content)) % 8
    return struct.pack('>BBHHBB', FCGI_VERSION_1, rtype, reqid, len(content), pad, 0) + \
        content + b'\0' * pad


def fcgi_nv_len(n):
    # 1 byte below 128, else 4 bytes with the high bit set
    return struct.pack('>B', n) if n < 128 else struct.pack('>I', n | 0x80000000)


def fcgi_nv(name, value):
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return fcgi_nv_len(len(name)) + fcgi_nv_len(len(value)) + name + value


def fcgi_stream(rtype, reqid, data):
    """A stream (PARAMS or STDIN) in records of at most 65535 bytes, then the empty one."""
    out = b''
    for off in range(0, len(data), 32768):
        out += fcgi_record(rtype, reqid, data[off:off + 32768])
    return out + fcgi_record(rtype, reqid, b'')


def cgi_params(method, path, query='', headers=None, body=b'', script_name='',
               extra=None):
    """The CGI/1.1 variables a web server would send for this request."""
    uri = script_name + path + ('?' + query if query else '')
    p = {
        'GATEWAY_INTERFACE': 'CGI/1.1',
        'SERVER_PROTOCOL': 'HTTP/1.1',
        'SERVER_SOFTWARE': 'hfutil',
        'REQUEST_METHOD': method,
        'PATH_INFO': path,
        'QUERY_STRING': query,
        'SCRIPT_NAME': script_name,
        'REQUEST_URI': uri,
        'REMOTE_ADDR': '127.0.0.1',
        'SERVER_NAME': 'localhost',
        'SERVER_PORT': '80',
    }
    ctype = None
    for k, v in (headers or {}).items():
        if k.lower() == 'content-type':
            ctype = v
            continue
        if k.lower() == 'content-length':
            continue
        p['HTTP_' + k.upper().replace('-', '_')] = v
    if ctype is not None:
        p['CONTENT_TYPE'] = ctype
    if body or method in ('POST', 'PUT'):
        p['CONTENT_LENGTH'] = str(len(body))
    if extra:
        p.update(extra)
    return p


def fcgi_encode_request(method, path, query='', headers=None, body=b'', reqid=1,
                        script_name='', extra=None, keep_conn=False):
    params = cgi_params(method, path, query, headers, body, script_name, extra)
    begin = struct.pack('>HB5x', FCGI_RESPONDER, 1 if keep_conn else 0)
    nv = b''.join(fcgi_nv(k, v) for k, v in params.items())
    return (fcgi_record(FCGI_BEGIN_REQUEST, reqid, begin) +
            fcgi_stream(FCGI_PARAMS, reqid, nv) +
            fcgi_stream(FCGI_STDIN, reqid, body))


class FcgiParser:
    """Incremental reader of a responder's records for one request."""

    def __init__(self):
        self.buf = b''
        self.stdout = b''
        self.stderr = b''
        self.done = False
        self.app_status = None
        self.protocol_status = None
        self.reqids = set()

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 8 and not self.done:
            ver, rtype, reqid, clen, plen, _ = struct.unpack('>BBHHBB', self.buf[:8])
            if ver != FCGI_VERSION_1:
                raise FcgiError('bad record version %d' % ver)
            if len(self.buf) < 8 + clen + plen:
                return
            content = self.buf[8:8 + clen]
            self.buf = self.buf[8 + clen + plen:]
            self.reqids.add(reqid)
            if rtype == FCGI_STDOUT:
                self.stdout += content
            elif rtype == FCGI_STDERR:
                self.stderr += content
            elif rtype == FCGI_END_REQUEST:
                self.app_status, self.protocol_status = struct.unpack('>IB3x', content)
                self.done = True
            else:
                raise FcgiError('unexpected record type %d' % rtype)


def parse_cgi_response(raw):
    """'Status: 200 OK\\r\\nName: v\\r\\n\\r\\nbody' -> (status, headers, body)."""
    sep = raw.find(b'\r\n\r\n')
    if sep >= 0:
        head, body = raw[:sep], raw[sep + 4:]
    else:
        sep = raw.find(b'\n\n')
        if sep < 0:
            raise FcgiError('no end of headers in %r' % raw[:200])
        head, body = raw[:sep], raw[sep + 2:]
    headers = {}
    for line in head.decode('latin-1').replace('\r\n', '\n').split('\n'):
        if not line:
            continue
        name, _, value = line.partition(':')
        headers[name.strip().lower()] = value.strip()
    status = 200
    if 'status' in headers:
        status = int(headers['status'].split()[0])
    if 'content-length' in headers and int(headers['content-length']) != len(body):
        raise FcgiError('Content-Length %s but %d body bytes' % (headers['content-length'],
                                                                   len(body)))
    return status, headers, body


def fcgi_connect(addr, timeout=10):
    """addr: 'unix:/path', '/path', (host, port) or 'host:port'."""
    if isinstance(addr, tuple):
        s = socket.create_connection(addr, timeout=timeout)
    elif addr.startswith('unix:') or addr.startswith('/'):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(addr[5:] if addr.startswith('unix:') else addr)
        except BaseException:
            s.close()
            raise
    else:
        host, _, port = addr.rpartition(':')
        s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def request(addr, method, path, query='', headers=None, body=b'', timeout=10, reqid=1,
            script_name='', extra=None):
    """One FastCGI request, blocking. Returns (status, headers, body)."""
    if isinstance(body, str):
        body = body.encode()
    deadline = time.monotonic() + timeout
    s = fcgi_connect(addr, timeout)
    try:
        s.sendall(fcgi_encode_request(method, path, query, headers, body, reqid,
                                      script_name, extra))
        p = FcgiParser()
        while not p.done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout('no FastCGI answer within %.1fs' % timeout)
            s.settimeout(left)
            data = s.recv(65536)
            if not data:
                raise FcgiError('connection closed before END_REQUEST (got %r)' %
                                p.stdout[:200])
            p.feed(data)
        if p.reqids != {reqid}:
            raise FcgiError('records for request ids %r, sent %d' % (p.reqids, reqid))
        return parse_cgi_response(p.stdout)
    finally:
        s.close()


def get_json(addr, path, query='', headers=None, timeout=10):
    st, h, b = request(addr, 'GET', path, query, headers, timeout=timeout)
    return st, h, (json.loads(b) if b else None)


def stats(addr, timeout=5):
    st, _, b = request(addr, 'GET', '/stats', timeout=timeout)
    if st != 200:
        raise FcgiError('/stats answered %d: %r' % (st, b))
    return json.loads(b)


def stats_many(addr, n=16, timeout=5):
    """n /stats requests spread over the workers (sequential requests tend to
    be accepted by the same worker every time)."""
    conns = park_many(addr, n, '/stats', spread=True)
    try:
        answers = collect(conns, timeout)
    finally:
        close_all(conns)
    return [json.loads(a[2]) for a in answers if a and a[0] == 200]


def publish(addr, channel, data, headers=None, timeout=10):
    """POST /pub/CHANNEL over FastCGI; returns (status, parsed JSON body)."""
    h = {'Content-Type': 'text/plain'}
    h.update(headers or {})
    st, _, b = request(addr, 'POST', '/pub/' + channel, '', h, data, timeout=timeout)
    return st, (json.loads(b) if b else None)


def wait_for(pred, timeout, interval=0.05, what='condition'):
    """Poll pred() until it returns a true value (returned) or timeout (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except (OSError, FcgiError) as e:
            last = e
            if time.monotonic() >= deadline:
                raise AssertionError('%s not reached within %.1fs (last: %r)' %
                                     (what, timeout, last))
        else:
            if last and not isinstance(last, Exception):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError('%s not reached within %.1fs (last: %r)' %
                                 (what, timeout, last))
        time.sleep(interval)


# ---- many requests at once ------------------------------------------------------

class FcgiConn:
    """A request sent on its own connection, answered later (see collect).

    With send=False only the connection is made; send() sends the request.
    holdfast's accepting threads take a connection as soon as it is made and
    block reading its request, so connections opened first and sent later
    are spread over every worker (4 accepting threads each by default)."""

    def __init__(self, addr, method, path, query='', headers=None, body=b'', reqid=1,
                 connect_timeout=10, send=True, extra=None):
        self.sock = fcgi_connect(addr, connect_timeout)
        self.data = fcgi_encode_request(method, path, query, headers, body, reqid,
                                        extra=extra)
        self.parser = FcgiParser()
        self.closed_early = False
        self.answer = None
        self.answered_at = None
        if send:
            self.send()

    def send(self):
        self.sock.sendall(self.data)
        self.sock.setblocking(False)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def park_many(addr, n, path, query='', headers=None, spread=False, extra=None):
    """n GET requests on n connections, not waiting for answers. spread=True
    connects all first and sends after a pause (see FcgiConn)."""
    conns = []
    try:
        for _ in range(n):
            conns.append(FcgiConn(addr, 'GET', path, query, headers, send=not spread,
                                  extra=extra))
        if spread:
            time.sleep(0.1)
            for c in conns:
                c.send()
    except BaseException:
        close_all(conns)
        raise
    return conns


def close_all(conns):
    for c in conns:
        c.close()


def collect(conns, timeout):
    """Read every connection's answer until all are complete or timeout passes.

    Returns a list parallel to conns: (status, headers, body), or None for a
    connection that was not answered (or closed without END_REQUEST).
    Connections are closed when done."""
    sel = selectors.DefaultSelector()
    live = 0
    for i, c in enumerate(conns):
        if c.sock is not None and c.answer is None:
            sel.register(c.sock, selectors.EVENT_READ, i)
            live += 1
    deadline = time.monotonic() + timeout
    try:
        while live:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(min(left, 0.5)):
                c = conns[key.data]
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b''
                if data:
                    c.parser.feed(data)
                if not data or c.parser.done:
                    sel.unregister(c.sock)
                    live -= 1
                    if c.parser.done:
                        c.answer = parse_cgi_response(c.parser.stdout)
                        c.answered_at = time.monotonic()
                    else:
                        c.closed_early = True
                    c.close()
    finally:
        sel.close()
    return [c.answer for c in conns]


# ---- processes ------------------------------------------------------------------

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


def children_of(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(')') + 2:].split()
        if fields[0] != 'Z' and int(fields[1]) == pid:
            out.append(int(d))
    return out


def proc_stat(pid):
    """(state, start time in clock ticks) of pid, or None."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rfind(')') + 2:].split()
    return fields[0], int(fields[19])


# pid -> start time, recorded when a process is first tracked, so that a pid
# reused by some other process is never taken for ours (nor killed).
PID_START = {}


def pid_alive(pid):
    """True if pid exists, is not a zombie, and (if tracked) is still the same process."""
    st = proc_stat(pid)
    if st is None or st[0] == 'Z':
        return False
    return PID_START.get(pid, st[1]) == st[1]


# Every process this module starts (and the children it saw them start), so
# that run.py can check, after the whole suite, that none survived.
STARTED = set()


def track(pids):
    for p in pids:
        if p not in PID_START:
            st = proc_stat(p)
            if st is None:
                continue
            PID_START[p] = st[1]
        STARTED.add(p)


def leftovers(kill=True):
    """Tracked processes still alive (killed by pid if kill)."""
    left = sorted(p for p in STARTED if pid_alive(p))
    if left and kill:
        kill_pids(left)
        wait_pids_gone(left, 5)
    return left


def kill_pids(pids, sig=signal.SIGKILL):
    for p in pids:
        if not pid_alive(p):
            continue
        try:
            os.kill(p, sig)
        except OSError:
            pass


def stop_process(pid, timeout=5):
    """SIGSTOP pid and wait until every thread of it is stopped: the signal
    is asynchronous, and a thread still running for a moment after kill()
    can take a connection and then hold it, stopped."""
    os.kill(pid, signal.SIGSTOP)

    def all_stopped():
        try:
            tasks = os.listdir('/proc/%d/task' % pid)
        except OSError:
            return True
        for t in tasks:
            try:
                with open('/proc/%d/task/%s/stat' % (pid, t)) as f:
                    state = f.read().rsplit(')', 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ('T', 't'):
                return False
        return True
    wait_for(all_stopped, timeout, interval=0.01, what='pid %d stopped' % pid)


def wait_pids_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return not any(pid_alive(p) for p in pids)


def publish_cli(db, channel, data, extra_args=(), env=None, timeout=20):
    """`holdfast publish --db DB CHANNEL DATA`; returns the new id."""
    cmd = [holdfast_bin(), 'publish', '--db', db] + list(extra_args) + [channel, data]
    r = subprocess.run(cmd, env=env or clean_env(), capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError('%r failed (%d): %s' % (cmd, r.returncode, r.stderr.decode()))
    return int(r.stdout.decode().strip().splitlines()[-1])


def top_level_keys(text):
    """The keys set before the first [section] of settings text."""
    keys = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('['):
            break
        if '=' in line and not line.startswith('#'):
            keys.add(line.split('=', 1)[0].strip())
    return keys


def settles_publishing(text):
    """True when settings text says who may publish (a publish_key or a
    top-level publish rule)."""
    return bool(top_level_keys(text) & {'publish', 'publish_key'})


# Every test client is 127.0.0.1 and many publish as fast as answered: tests
# about something else than the abuse limits lift the ones they would meet
# (test_security.py passes closed=True and keeps the defaults).
RELAXED = (('max_parked_per_client', '0'), ('publish_rate', '0'))


def env_settles_publishing(env):
    """True when environment variables say who may publish."""
    return any(k in env for k in ('HOLDFAST_PUBLISH', 'HOLDFAST_PUBLISH_KEY'))


def open_publishing(text):
    """Tests about something else than access publish without a key, as
    before publishing was closed by default: settings that do not say who
    may publish get `publish = anyone`."""
    return text if settles_publishing(text) else 'publish = anyone\n' + text


def relax_limits(text):
    """RELAXED for each of its keys the settings do not set."""
    keys = top_level_keys(text)
    return ''.join('%s = %s\n' % kv for kv in RELAXED if kv[0] not in keys) + text


def write_config(path, settings, closed=False, settled=False):
    """settings: dict (key = value lines) or a string.  Unless closed,
    relax_limits() applies, and open_publishing() unless settled (the
    environment says who may publish)."""
    if isinstance(settings, dict):
        text = ''.join('%s = %s\n' % (k, v) for k, v in settings.items())
    else:
        text = settings
    if not closed:
        text = relax_limits(text if settled else open_publishing(text))
    with open(path, 'w') as f:
        f.write(text)
    return path


class TrackedServer:
    """A server process started by a test, with every pid it ever had
    (self.proc, self.known_pids, refresh_pids()), so teardown can make sure
    nothing of it survives."""

    def reap_leftovers(self, problems, grace):
        """After the main process exited: note (in problems) and kill any of
        its processes still alive after `grace` seconds; close its output."""
        left = [p for p in self.known_pids if pid_alive(p)]
        if left and not wait_pids_gone(left, grace):
            problems.append('processes left behind: %r' % left)
            kill_pids(left)
            wait_pids_gone(left, 3)
        self.proc = None
        self.close_output()

    def kill(self):
        """Teardown: make sure nothing of ours survives (by pid; no questions asked)."""
        if self.proc is not None:
            self.refresh_pids()
            kill_pids([self.proc.pid])
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
            self.close_output()
        left = [p for p in self.known_pids if pid_alive(p)]
        kill_pids(left)
        wait_pids_gone(left, 3)


class HoldfastServer(TrackedServer):
    """`holdfast serve` on a unix socket in a directory of its own."""

    def __init__(self, tmpdir, workers=1, config=None, db=None, threads=None, env=None,
                 listen=None, closed=False):
        self.dir = tmpdir
        self.db = db or os.path.join(tmpdir, 'hf.db')
        self.sock = os.path.join(tmpdir, 'hf.sock')
        self.addr = listen or 'unix:' + self.sock
        self.workers = workers
        self.threads = threads
        self.config_path = os.path.join(tmpdir, 'holdfast.conf')
        env = env or {}
        write_config(self.config_path, config or '', closed=closed,
                     settled=env_settles_publishing(env))
        self.env = clean_env(**env)
        self.proc = None
        self.log_path = os.path.join(tmpdir, 'serve.log')
        self.known_pids = set()

    def start(self, wait=True):
        cmd = [holdfast_bin(), 'serve', '--db', self.db, '--listen', self.addr,
               '--workers', str(self.workers), '--config', self.config_path]
        if self.threads:
            cmd += ['--threads', str(self.threads)]
        self.log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        self.known_pids.add(self.proc.pid)
        track(self.known_pids)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError('holdfast serve exited with %d:\n%s' %
                                     (self.proc.returncode, self.read_log()))
            try:
                st, _, body = request(self.addr, 'GET', '/health', timeout=2)
                if st == 200:
                    self.refresh_pids()
                    if len(self.worker_pids()) >= self.workers:
                        return
                last = (st, body)
            except (OSError, FcgiError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError('holdfast serve not ready within %ds (last: %r)\n%s' %
                             (timeout, last, self.read_log()))

    def worker_pids(self):
        return children_of(self.proc.pid) if self.proc else []

    def refresh_pids(self):
        self.known_pids.update(self.worker_pids())
        track(self.known_pids)

    def read_log(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def stop(self, timeout=15):
        """SIGTERM the supervisor and wait; SIGKILL on timeout. Returns the exit code.
        Raises AssertionError if it had to kill or if any process is left."""
        if self.proc is None:
            return None
        self.refresh_pids()
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append('supervisor ignored SIGTERM for %ds' % timeout)
                kill_pids([self.proc.pid])
                self.proc.wait(5)
        rc = self.proc.returncode
        self.reap_leftovers(problems, 3)
        if problems:
            raise AssertionError('; '.join(problems) + '\n' + self.read_log())
        return rc

    def close_output(self):
        self.log.close()


def open_env(env, config_path=None):
    """open_publishing() and relax_limits() for settings from the
    environment: HOLDFAST_PUBLISH = anyone unless the environment or the
    config file says who may publish; RELAXED where neither sets a limit."""
    text = ''
    if config_path and os.path.exists(config_path):
        with open(config_path) as f:
            text = f.read()
    keys = top_level_keys(text)
    if not (settles_publishing(text) or env_settles_publishing(env)):
        env['HOLDFAST_PUBLISH'] = 'anyone'
    for key, value in RELAXED:
        if key not in keys:
            env.setdefault('HOLDFAST_' + key.upper(), value)
    return env


def run_cgi(env_vars, body=b'', timeout=20, db=None, config_path=None):
    """Run holdfast as a CGI program (stdin a pipe, not a socket).

    Returns (status, headers, body, stderr)."""
    env = clean_env(GATEWAY_INTERFACE='CGI/1.1', SERVER_PROTOCOL='HTTP/1.1',
                    **env_vars)
    if db:
        env['HOLDFAST_DB'] = db
    if config_path:
        env['HOLDFAST_CONFIG'] = config_path
    open_env(env, config_path)
    if body or env.get('REQUEST_METHOD') in ('POST', 'PUT'):
        env.setdefault('CONTENT_LENGTH', str(len(body)))
    r = subprocess.run([holdfast_bin()], env=env, input=body, capture_output=True,
                       timeout=timeout)
    st, h, b = parse_cgi_response(r.stdout)
    return st, h, b, r.stderr.decode(errors='replace')


def cgi_popen(env_vars, db=None, config_path=None):
    """Start a CGI subscribe in the background (stdin a pipe, closed at once)."""
    env = clean_env(GATEWAY_INTERFACE='CGI/1.1', SERVER_PROTOCOL='HTTP/1.1', **env_vars)
    if db:
        env['HOLDFAST_DB'] = db
    if config_path:
        env['HOLDFAST_CONFIG'] = config_path
    open_env(env, config_path)
    p = subprocess.Popen([holdfast_bin()], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    track([p.pid])
    p.stdin.close()
    p.stdin = None  # so communicate() does not touch it
    return p


# ---- lighttpd -------------------------------------------------------------------

def lighttpd_available():
    return os.access(LIGHTTPD, os.X_OK)


def lstr(s):
    """A lighttpd config string literal."""
    return '"' + str(s).replace('\\', '\\\\').replace('"', '\\"') + '"'


class Lighttpd(TrackedServer):
    """A private lighttpd on 127.0.0.1:<free port>.

    mode 'spawn':  mod_fastcgi starts holdfast itself (bin-path, max-procs 1).
    mode 'socket': mod_fastcgi connects to a running `holdfast serve` socket.
    mode 'cgi':    mod_cgi runs holdfast per request (cgi.assign).
    holdfast is mounted at "/hf" (no trailing slash), so /hf/sub/x arrives as
    SCRIPT_NAME=/hf, PATH_INFO=/sub/x. Checked with lighttpd 1.4.69: with the
    key "/hf/" it arrives as SCRIPT_NAME=/hf/sub, PATH_INFO=/x (and /hf/health
    as SCRIPT_NAME=/hf/health, no PATH_INFO), which no fallback can undo."""

    MOUNT = '/hf'

    def __init__(self, tmpdir, mode, db=None, socket_path=None, hf_env=None):
        self.dir = tmpdir
        self.mode = mode
        self.port = None
        self.db = db
        self.socket_path = socket_path
        self.hf_env = hf_env or {}
        self.proc = None
        self.conf = os.path.join(tmpdir, 'lighttpd.conf')
        self.errorlog = os.path.join(tmpdir, 'lighttpd-error.log')
        self.known_pids = set()

    def config_text(self):
        docroot = os.path.join(self.dir, 'www')
        os.makedirs(docroot, exist_ok=True)
        lines = [
            'server.document-root = %s' % lstr(docroot),
            'server.bind = "127.0.0.1"',
            'server.port = %d' % self.port,
            'server.errorlog = %s' % lstr(self.errorlog),
            'server.max-fds = 4096',
            'server.max-connections = 1024',
            'server.upload-dirs = ( %s )' % lstr(self.dir),
        ]
        envs = {'HOLDFAST_DB': self.db, 'HOLDFAST_CONFIG': os.path.join(self.dir, 'empty.conf')}
        envs.update(self.hf_env)
        open_env(envs)
        with open(envs['HOLDFAST_CONFIG'], 'a'):
            pass
        env_list = ', '.join('%s => %s' % (lstr(k), lstr(v)) for k, v in envs.items())
        if self.mode == 'spawn':
            lines += [
                'server.modules += ( "mod_fastcgi" )',
                'fastcgi.server = ( "%s" => (( ' % self.MOUNT +
                '"bin-path" => %s, ' % lstr(holdfast_bin()) +
                '"socket" => %s, ' % lstr(os.path.join(self.dir, 'spawn.sock')) +
                '"max-procs" => 1, '
                '"bin-environment" => ( %s ), ' % env_list +
                '"check-local" => "disable" )) )',
            ]
        elif self.mode == 'socket':
            lines += [
                'server.modules += ( "mod_fastcgi" )',
                'fastcgi.server = ( "%s" => (( ' % self.MOUNT +
                '"socket" => %s, ' % lstr(self.socket_path) +
                '"check-local" => "disable" )) )',
            ]
        elif self.mode == 'cgi':
            cgidir = os.path.join(docroot, 'cgi')
            os.makedirs(cgidir, exist_ok=True)
            script = os.path.join(cgidir, 'hf.cgi')
            if not os.path.exists(script):
                os.symlink(holdfast_bin(), script)
            lines += [
                'server.modules += ( "mod_cgi", "mod_setenv" )',
                'cgi.assign = ( ".cgi" => "" )',
                'setenv.add-environment = ( %s )' % env_list,
            ]
        else:
            raise ValueError(self.mode)
        return '\n'.join(lines) + '\n'

    def start(self, timeout=10):
        self.port = free_port()
        with open(self.conf, 'w') as f:
            f.write(self.config_text())
        self.out = open(os.path.join(self.dir, 'lighttpd.out'), 'ab')
        self.proc = subprocess.Popen([LIGHTTPD, '-D', '-f', self.conf], env=clean_env(),
                                     stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.out, start_new_session=True)
        self.known_pids.add(self.proc.pid)
        track(self.known_pids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError('lighttpd exited with %d:\n%s' %
                                     (self.proc.returncode, self.read_logs()))
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError('lighttpd not listening within %ds\n%s' %
                                 (timeout, self.read_logs()))
        self.refresh_pids()
        return self

    def refresh_pids(self):
        if self.proc:
            self.known_pids.update(children_of(self.proc.pid))
        track(self.known_pids)

    def read_logs(self):
        out = ''
        for p in (self.errorlog, os.path.join(self.dir, 'lighttpd.out')):
            try:
                with open(p, 'rb') as f:
                    out += f.read().decode(errors='replace')
            except OSError:
                pass
        return out

    def http(self, method, url, body=None, headers=None, timeout=10):
        """One HTTP request; returns (status, headers (lower-cased), body)."""
        c = http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)
        try:
            c.request(method, url, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def stop(self, timeout=10):
        """SIGTERM lighttpd (it stops the backends it spawned); kill what is left."""
        if self.proc is None:
            return
        self.refresh_pids()
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append('lighttpd ignored SIGTERM')
                kill_pids([self.proc.pid])
                self.proc.wait(5)
        self.reap_leftovers(problems, 5)
        if problems:
            raise AssertionError('; '.join(problems) + '\n' + self.read_logs())

    def close_output(self):
        self.out.close()


def make_tmpdir(prefix='hf-it-'):
    # short paths: unix socket paths are limited to 107 bytes
    return tempfile.mkdtemp(prefix=prefix, dir='/tmp')


def remove_tmpdir(d):
    shutil.rmtree(d, ignore_errors=True)
