#!/usr/bin/env python3
"""fake_lp.py -- a stand-in long-poll server speaking holdfast's HTTP API
(DESIGN.md section 2) well enough to prove the load tool before the real
server exists: GET /stats, GET /sub/{channel}, POST /pub/{channel}.

    fake_lp.py [--http HOST:PORT] [--fcgi /path.sock] [--port-file F]
               [--chunked] [--close-every K] [--limit N] [--split]
               [--fault dup|drop|reorder [--fault-every K]] [--lifetime SEC]

--http serves HTTP/1.1 with keep-alive (port 0 picks a free port, written to
--port-file); --fcgi serves FastCGI on a unix socket (one request per
connection, what nginx and lighttpd do).  Both fronts share one log.
--chunked answers with Transfer-Encoding: chunked, --close-every K closes
every K-th HTTP connection after its answer, --limit caps messages per poll
answer, --split writes FastCGI answers in 7-byte STDOUT records.  --fault
breaks every K-th non-empty poll answer on purpose (repeat a message, drop
one while advancing the cursor, or reverse the order), to prove that the
load tool notices.  The process exits after --lifetime seconds (default
600).  Loopback only.

Semantics kept from the contract: ids strictly increase; since=N returns
every message of the channel with id > N, oldest first, all in one answer
(up to --limit); a poll that times out returns 200 with no messages and a
cursor that is safe to adopt; an epoch that differs gets "reset": true and
the head.  /stats returns {"head", "epoch", "parked", "messages"}.
"""

import argparse
import bisect
import json
import os
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Log:
    """The message log and the parked-waiter count, under one condition."""

    def __init__(self, limit, fault, fault_every):
        self.cond = threading.Condition()
        self.fault, self.fault_every, self.answers = fault, fault_every, 0
        self.epoch = os.urandom(8).hex()
        self.head = 1000  # not 0, so a client that ignores since is caught
        self.channels = {}  # name -> (ids, messages)
        self.parked = 0
        self.total = 0
        self.limit = limit

    def publish(self, channel, ctype, body):
        with self.cond:
            self.head += 1
            msg = {"id": self.head, "channel": channel,
                   "time": int(time.time() * 1000), "type": ctype}
            try:
                msg["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                msg["data"] = body.hex()
                msg["encoding"] = "hex"
            ids, msgs = self.channels.setdefault(channel, ([], []))
            ids.append(self.head)
            msgs.append(msg)
            self.total += 1
            self.cond.notify_all()
            return msg

    def _after(self, channel, since):
        ids, msgs = self.channels.get(channel, ([], []))
        out = msgs[bisect.bisect_right(ids, since):]
        return out[: self.limit] if self.limit else out

    def poll(self, channel, since, epoch, timeout):
        with self.cond:
            if epoch and epoch != self.epoch:
                return {"cursor": self.head, "epoch": self.epoch, "messages": [],
                        "gap": False, "reset": True}
            if since is None or since > self.head:
                since = self.head
            deadline = time.monotonic() + timeout
            found = self._after(channel, since)
            while not found:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.parked += 1
                try:
                    self.cond.wait(left)
                finally:
                    self.parked -= 1
                found = self._after(channel, since)
            cursor = found[-1]["id"] if found else self.head
            if found and self.fault:
                found = self._break(found)
            return {"cursor": cursor, "epoch": self.epoch, "messages": found,
                    "gap": False}

    def _break(self, found):
        self.answers += 1
        if self.answers % self.fault_every:
            return found
        if self.fault == "dup":
            return found + found[-1:]
        if self.fault == "drop":
            return found[1:]
        if self.fault == "reorder" and len(found) > 1:
            return found[::-1]
        return found

    def stats(self):
        with self.cond:
            return {"head": self.head, "epoch": self.epoch,
                    "parked": self.parked, "messages": self.total}


def route(log, method, path, query, body, ctype):
    """The API, transport-free: returns (status, json-able object)."""
    q = urllib.parse.parse_qs(query)
    for marker in ("/sub/", "/pub/", "/stats"):
        at = path.find(marker)
        if at >= 0:
            path = path[at:]
            break
    if path == "/stats":
        return 200, log.stats()
    if path.startswith("/sub/") and method == "GET":
        channel = path[5:]
        try:
            since = int(q["since"][0]) if "since" in q else None
            timeout = min(float(q.get("timeout", ["25"])[0]), 60.0)
        except ValueError:
            return 400, {"error": "bad parameter"}
        return 200, log.poll(channel, since, q.get("epoch", [""])[0], timeout)
    if path.startswith("/pub/") and method == "POST":
        msg = log.publish(path[5:], ctype or "text/plain", body)
        return 201, {"id": msg["id"], "channel": msg["channel"], "time": msg["time"]}
    return 404, {"error": "no route", "detail": path}


class HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers = 0
    answers_lock = threading.Lock()

    def log_message(self, fmt, *args):
        pass

    def _serve(self, method):
        url = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        status, obj = route(self.server.log, method, url.path, url.query, body,
                            self.headers.get("Content-Type"))
        data = json.dumps(obj).encode()
        with HttpHandler.answers_lock:
            HttpHandler.answers += 1
            k = HttpHandler.answers
        close = self.server.close_every and k % self.server.close_every == 0
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        if self.server.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = len(data) // 2
            for part in (data[:half], data[half:]):
                if part:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")


class FcgiHandler(socketserver.BaseRequestHandler):
    """One FastCGI request per connection: records in, records out."""

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _record(self):
        ver, typ, rid, clen, plen, _ = struct.unpack(">BBHHBB", self._read(8))
        content = self._read(clen) if clen else b""
        if plen:
            self._read(plen)
        return typ, rid, content

    @staticmethod
    def _params(blob):
        out, i = {}, 0
        while i < len(blob):
            lens = []
            for _ in range(2):
                if blob[i] < 128:
                    lens.append(blob[i])
                    i += 1
                else:
                    lens.append(struct.unpack(">I", blob[i:i + 4])[0] & 0x7FFFFFFF)
                    i += 4
            name = blob[i:i + lens[0]].decode("latin-1")
            i += lens[0]
            out[name] = blob[i:i + lens[1]].decode("latin-1")
            i += lens[1]
        return out

    def _send(self, typ, rid, data):
        self.request.sendall(struct.pack(">BBHHBB", 1, typ, rid, len(data), 0, 0) + data)

    def handle(self):
        params, stdin, rid = b"", b"", 1
        try:
            while True:
                typ, rid, content = self._record()
                if typ == 4:
                    if not content:
                        continue
                    params += content
                elif typ == 5:
                    if not content:
                        break
                    stdin += content
        except EOFError:
            return
        env = self._params(params)
        status, obj = route(self.server.log, env.get("REQUEST_METHOD", "GET"),
                            env.get("PATH_INFO", ""), env.get("QUERY_STRING", ""),
                            stdin, env.get("CONTENT_TYPE"))
        data = json.dumps(obj).encode()
        out = (b"Status: %d X\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (status, len(data), data))
        step = 7 if self.server.split else 65535
        try:
            for at in range(0, len(out), step):
                self._send(6, rid, out[at:at + step])
            self._send(6, rid, b"")
            self._send(3, rid, struct.pack(">IB3x", 0, 0))
        except OSError:
            pass  # the client left


class FcgiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 4096


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--http")
    ap.add_argument("--fcgi")
    ap.add_argument("--port-file")
    ap.add_argument("--chunked", action="store_true")
    ap.add_argument("--close-every", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--fault", choices=("dup", "drop", "reorder"))
    ap.add_argument("--fault-every", type=int, default=7)
    ap.add_argument("--lifetime", type=float, default=600)
    a = ap.parse_args()
    if not a.http and not a.fcgi:
        ap.error("give --http and/or --fcgi")
    log = Log(a.limit, a.fault, max(1, a.fault_every))
    servers = []
    if a.http:
        host, port = a.http.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost", ""):
            ap.error("loopback only")
        srv = HttpServer(("127.0.0.1", int(port)), HttpHandler)
        srv.log, srv.chunked, srv.close_every = log, a.chunked, a.close_every
        servers.append(srv)
        if a.port_file:
            with open(a.port_file + ".tmp", "w") as f:
                f.write("%d\n" % srv.server_address[1])
            os.rename(a.port_file + ".tmp", a.port_file)
    if a.fcgi:
        if os.path.exists(a.fcgi):
            os.unlink(a.fcgi)
        srv = FcgiServer(a.fcgi, FcgiHandler)
        srv.log, srv.split = log, a.split
        servers.append(srv)
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    time.sleep(a.lifetime)
    os._exit(0)


if __name__ == "__main__":
    main()
