#!/usr/bin/env python3
"""fcgi_dump.py -- a FastCGI responder that answers every request with what
the web server sent: the FCGI_BEGIN_REQUEST role and flags (is FCGI_KEEP_CONN
set?) and every parameter, as text.  The evidence tool behind the deploy
configurations' claims (PATH_INFO, SCRIPT_NAME, HTTP_AUTHORIZATION, keep-conn).

    fcgi_dump.py --listen /path/to.sock | HOST:PORT   (what `holdfast serve` does)
    fcgi_dump.py                                      (spawned: socket on fd 0)

Also works as a CGI program (fd 0 not a socket): prints the environment and argv.
Standard library only; one thread per connection; exits on SIGTERM.
"""
import os
import signal
import socket
import struct
import sys
import threading


def records(conn):
    buf = b''
    while True:
        while len(buf) >= 8:
            ver, typ, rid, clen, plen, _ = struct.unpack('>BBHHBB', buf[:8])
            if len(buf) < 8 + clen + plen:
                break
            yield typ, rid, buf[8:8 + clen]
            buf = buf[8 + clen + plen:]
        data = conn.recv(65536)
        if not data:
            return
        buf += data


def nv_pairs(data):
    i, out = 0, []
    while i < len(data):
        lens = []
        for _ in range(2):
            if data[i] & 0x80:
                lens.append(struct.unpack('>I', data[i:i + 4])[0] & 0x7fffffff)
                i += 4
            else:
                lens.append(data[i])
                i += 1
        name = data[i:i + lens[0]].decode('latin-1')
        i += lens[0]
        value = data[i:i + lens[1]].decode('latin-1')
        i += lens[1]
        out.append((name, value))
    return out


def record(typ, rid, content=b''):
    pad = (-len(content)) % 8
    return struct.pack('>BBHHBB', 1, typ, rid, len(content), pad, 0) + content + b'\0' * pad


def serve_conn(conn):
    params, flags, role, stdin = b'', None, None, b''
    with conn:
        for typ, rid, content in records(conn):
            if typ == 1:                       # BEGIN_REQUEST
                role, flags = struct.unpack('>HB', content[:3])
            elif typ == 4:                     # PARAMS
                params += content
            elif typ == 5:                     # STDIN
                if content:
                    stdin += content
                    continue
                lines = ['role %s' % role,
                         'keep_conn %s' % ('on' if flags & 1 else 'off')]
                lines += ['param %s=%s' % nv for nv in nv_pairs(params)]
                lines.append('stdin %d' % len(stdin))
                body = ('\n'.join(lines) + '\n').encode()
                sys.stderr.write(body.decode())
                out = b'Content-Type: text/plain\r\n\r\n' + body
                conn.sendall(record(6, rid, out) + record(6, rid) +
                             record(3, rid, struct.pack('>IB3x', 0, 0)))
                if not flags & 1:
                    return
                params, stdin = b'', b''


def main():
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if len(sys.argv) == 3 and sys.argv[1] == '--listen':
        addr = sys.argv[2]
        if ':' in addr and not addr.startswith('/'):
            host, port = addr.rsplit(':', 1)
            lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind((host or '127.0.0.1', int(port)))
        else:
            path = addr[5:] if addr.startswith('unix:') else addr
            if os.path.exists(path):
                os.unlink(path)
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lsock.bind(path)
        lsock.listen(128)
    else:
        try:
            lsock = socket.socket(fileno=0)
            lsock.getsockname()
        except OSError:                        # not a socket: CGI
            print('Content-Type: text/plain\n')
            print('argv %r' % sys.argv)
            for k in sorted(os.environ):
                print('env %s=%s' % (k, os.environ[k]))
            return
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()


if __name__ == '__main__':
    main()
