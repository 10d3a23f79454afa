"""soakutil.py -- shared pieces of the soak tests (standard library only).

  * imports hfutil (tests/integration) and deploy_test (tests/deploy), which
    the soak reuses as they are: pid tracking, the FastCGI client, the
    templating of the shipped configuration files
  * a raw HTTP/1.0 client over loopback whose read loop can be cut from
    another thread (abrupt close with RST), with a global request cap
  * a private tmpfs for the database (mounted and unmounted by the caller)

Every wait here is bounded in time.
"""
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
sys.path.insert(0, os.path.join(TOP, 'tests', 'deploy'))

import hfutil  # noqa: E402  (tests/integration/hfutil.py)
import deploy_test as dt  # noqa: E402  (tests/deploy/deploy_test.py)


def now():
    return time.monotonic()


# ---- request cap ------------------------------------------------------------------

class Cap:
    """Counts every HTTP request made; `exceeded` once the hard cap is reached."""

    def __init__(self, limit):
        self.limit = limit
        self.n = 0
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            self.n += 1
            return self.n <= self.limit

    @property
    def exceeded(self):
        return self.n >= self.limit


class CapExceeded(Exception):
    pass


class HttpError(Exception):
    """A request that got no complete HTTP answer; .kind says how."""

    def __init__(self, kind, detail=''):
        super().__init__('%s %s' % (kind, detail))
        self.kind = kind


class Cut(Exception):
    """The caller asked for the connection to be cut; .when = 'parked' | 'answer'."""

    def __init__(self, when):
        super().__init__(when)
        self.when = when


def rst_close(s):
    """Close abruptly: SO_LINGER 0 makes close() send RST, not FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    except OSError:
        pass
    s.close()


def parse_http(raw):
    sep = raw.find(b'\r\n\r\n')
    if sep < 0:
        raise HttpError('truncated', 'no end of headers (%d bytes)' % len(raw))
    head, body = raw[:sep].decode('latin-1'), raw[sep + 4:]
    lines = head.split('\r\n')
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError('bad_status_line', lines[0][:80])
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(':')
        headers[k.strip().lower()] = v.strip()
    if 'chunked' in headers.get('transfer-encoding', '').lower():
        out, rest = b'', body
        while True:
            crlf = rest.find(b'\r\n')
            if crlf < 0:
                raise HttpError('truncated', 'chunked body')
            size = int(rest[:crlf].split(b';')[0], 16)
            if size == 0:
                break
            out += rest[crlf + 2:crlf + 2 + size]
            if len(rest) < crlf + 4 + size:
                raise HttpError('truncated', 'chunked body')
            rest = rest[crlf + 4 + size:]
        body = out
    elif 'content-length' in headers:
        want = int(headers['content-length'])
        if len(body) < want:
            raise HttpError('truncated', 'body %d of %d bytes' % (len(body), want))
        body = body[:want]
    return status, headers, body


def http(port, method, path, body=b'', headers=None, timeout=10, cap=None, ctl=None):
    """One HTTP/1.0 request on its own connection; (status, headers, body).

    ctl, if given, is polled between reads (every 0.2 s): ctl.cut_request()
    returns None, 'parked' (cut if no byte of the answer arrived yet) or
    'answer' (cut as soon as the first bytes arrive), and ctl.should_abandon()
    tells to give the request up quietly.  A cut closes with RST and raises Cut."""
    if cap is not None and not cap.take():
        raise CapExceeded()
    if isinstance(body, str):
        body = body.encode()
    h = {'Host': '127.0.0.1', 'Connection': 'close'}
    h.update(headers or {})
    if body or method in ('POST', 'PUT'):
        h['Content-Length'] = str(len(body))
    req = ('%s %s HTTP/1.0\r\n' % (method, path) +
           ''.join('%s: %s\r\n' % kv for kv in h.items()) + '\r\n').encode('latin-1') + body
    deadline = now() + timeout
    try:
        s = socket.create_connection(('127.0.0.1', port), timeout=min(timeout, 5))
    except socket.timeout:
        raise HttpError('connect_timeout')
    except ConnectionRefusedError:
        raise HttpError('refused')
    except OSError as e:
        raise HttpError('connect_error', repr(e))
    try:
        try:
            s.sendall(req)
        except OSError as e:
            raise HttpError('send_error', repr(e))
        if ctl is not None:
            ctl.on_sent()
        s.settimeout(0.2)
        buf = b''
        waited = False
        while True:
            mode = ctl.cut_request() if ctl is not None else None
            if mode == 'parked' and not buf and waited:
                rst_close(s)
                s = None
                raise Cut('parked')
            if ctl is not None and ctl.should_abandon():
                rst_close(s)
                s = None
                raise HttpError('abandoned')
            if now() > deadline:
                raise HttpError('client_timeout', '%.1f s' % timeout)
            try:
                d = s.recv(16 if mode == 'answer' else 65536)
            except socket.timeout:
                waited = True
                continue
            except ConnectionResetError:
                raise HttpError('conn_reset', 'after %d bytes' % len(buf))
            except OSError as e:
                raise HttpError('recv_error', repr(e))
            if d and mode == 'answer':
                rst_close(s)
                s = None
                raise Cut('answer')
            if not d:
                break
            buf += d
        if not buf:
            raise HttpError('empty', 'closed without an answer')
        return parse_http(buf)
    finally:
        if s is not None:
            s.close()


# ---- tmpfs --------------------------------------------------------------------------

def mount_tmpfs(path, size_mb, uid, gid):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o',
                        'size=%dm,uid=%d,gid=%d,mode=0755' % (size_mb, uid, gid),
                        'soak-tmpfs', path], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise RuntimeError('mount tmpfs on %s: %s' % (path, r.stderr.strip()))


def is_mounted(path):
    path = os.path.realpath(path)
    try:
        with open('/proc/self/mounts') as f:
            return any(line.split()[1] == path for line in f)
    except OSError:
        return False


def umount(path):
    """Unmount path (bounded: plain, then lazy); True when it is no longer mounted."""
    for args in (['umount', path], ['umount', '-l', path]):
        if not is_mounted(path):
            return True
        for _ in range(10):
            subprocess.run(args, capture_output=True, timeout=20)
            if not is_mounted(path):
                return True
            time.sleep(0.3)
    return not is_mounted(path)


def fill_disk(path):
    """Write a filler file at path until ENOSPC; returns the bytes written."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 14, 512):
            block = b'\xa5' * chunk
            for _ in range(100000):
                try:
                    w = os.write(fd, block)
                except OSError:
                    break
                n += w
                if w < chunk:
                    break
    finally:
        os.close(fd)
    return n


def jitter(a, b):
    return random.uniform(a, b)


# ---- processes, by pid *and* start time ---------------------------------------------
# A long soak starts thousands of processes and pids wrap around: a pid is
# only ever signalled together with the start time it had when it was seen.

def start_time(pid):
    st = hfutil.proc_stat(pid)
    return st[1] if st and st[0] != 'Z' else None


def snapshot(pids):
    """{pid: start time} of the pids that are alive now."""
    out = {}
    for p in pids:
        t = start_time(p)
        if t is not None:
            out[p] = t
    return out


def alive(snap):
    return sorted(p for p, t in snap.items() if start_time(p) == t)


def kill_snap(snap, sig=9):
    """Signal every process of snap that is still the same process."""
    for p in alive(snap):
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(snap, timeout):
    end = now() + timeout
    while now() < end:
        if not alive(snap):
            return True
        time.sleep(0.05)
    return not alive(snap)


def listeners(port):
    """[(pid, cmdline)] of the processes holding a TCP socket listening on 127.0.0.1:port."""
    inodes = set()
    try:
        with open('/proc/net/tcp') as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == '0A' and int(local.split(':')[1], 16) == port:
                    inodes.add('socket:[%s]' % inode)
    except OSError:
        return []
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir('/proc/%s/fd' % d):
                if os.readlink('/proc/%s/fd/%s' % (d, fd)) in inodes:
                    with open('/proc/%s/cmdline' % d, 'rb') as f:
                        out.append((int(d), f.read().replace(b'\0', b' ').decode()[:80]))
                    break
        except OSError:
            continue
    return out
