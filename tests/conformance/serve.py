#!/usr/bin/env python3
"""serve.py -- one holdfast deployment for the Durable Streams conformance run.

Starts holdfast behind a real web server on 127.0.0.1 and a free port, from
the configuration files shipped in deploy/, through tests/deploy/deploy_test.py's
deployment classes (so what is tested is exactly what deploy_test.py tests):

  nginx            deploy/nginx/holdfast-site.conf in front of `holdfast serve`
                   (deploy/systemd/holdfast.conf, holdfast.service's command)
  lighttpd-spawn   deploy/lighttpd/holdfast-spawn.conf: lighttpd starts
                   holdfast itself (bin-path, settings in bin-environment)
  lighttpd-socket  deploy/lighttpd/holdfast-socket.conf to `holdfast serve`

The only change to the shipped settings: the lines of --conf (by default
tests/conformance/holdfast-conformance.conf) are appended to the deployment's
holdfast.conf; for lighttpd-spawn, whose settings are environment variables,
they are the whole file, named by HOLDFAST_CONFIG in bin-environment (as the
shipped file's comment says).  A top-level key the binary does not know (its
name is not in the binary) is left out with a WARNING line rather than
making holdfast refuse to start, so that a binary from before the Durable
Streams surface still runs the suite end to end (and fails it).

When /lp/health answers 200, writes {"url", "port", "dir", "warnings"} to
--info (atomically) and prints the URL; then waits until SIGTERM/SIGINT,
--max-seconds, or one of its server processes exiting.  Then it stops the
servers, checks that no process of theirs is left (killing any that is) and
copies their logs to --logs.  Prints "serve NAME: ..." lines; the exit
status is 0 only if the servers started, stayed up, and stopped leaving
nothing behind.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, 'tests', 'deploy'))
import deploy_test as dt  # noqa: E402  (the shipped-config deployments)

SERVERS = {
    'nginx': dt.Nginx,
    'lighttpd-spawn': dt.LighttpdSpawn,
    'lighttpd-socket': dt.LighttpdSocket,
}

stopping = []


def on_signal(signum, _frame):
    stopping.append(signum)


def say(name, msg):
    print('serve %s: %s' % (name, msg), flush=True)


def settings_lines(path, binary, name):
    """The lines of `path`, without top-level keys `binary` does not know."""
    with open(binary, 'rb') as f:
        image = f.read()
    out, warnings, in_section = [], [], False
    with open(path) as f:
        for raw in f:
            line = raw.rstrip('\n')
            s = line.strip()
            if s.startswith('['):
                in_section = True
            elif s and not s.startswith('#') and '=' in s and not in_section:
                key = s.split('=', 1)[0].strip()
                if key.encode() not in image:
                    w = ('WARNING: %s does not know the setting %r (built before it?): '
                         'left out of holdfast.conf' % (binary, key))
                    warnings.append(w)
                    say(name, w)
                    line = '# (left out, unknown to this binary) ' + line
            out.append(line)
    return out, warnings


def add_settings(dep, lines):
    """The conformance settings into the deployment, after its setup()."""
    text = '\n# ---- tests/conformance (serve.py) ----\n' + '\n'.join(lines) + '\n'
    conf = dep.p('conf', 'holdfast.conf')
    if isinstance(dep, dt.LighttpdSpawn):
        # Settings come from bin-environment, which overrides the file; the
        # file holds what the environment cannot say ([channel] sections).
        with open(conf, 'w') as f:
            f.write(text)
        inc = dep.p('conf', 'holdfast-spawn.conf')
        with open(inc) as f:
            spawn = f.read()
        anchor = '"bin-environment" => ('
        if spawn.count(anchor) != 1:
            raise dt.TemplateError('lighttpd/holdfast-spawn.conf: no single %r' % anchor)
        spawn = spawn.replace(anchor, anchor + '\n            "HOLDFAST_CONFIG" => "%s",' % conf)
        with open(inc, 'w') as f:
            f.write(spawn)
    else:
        if not os.path.exists(conf):
            raise dt.TemplateError('%s: no holdfast.conf from the deployment' % dep.name)
        with open(conf, 'a') as f:
            f.write(text)


def start(cls, root, binary, lines, name):
    """The deployment, started and healthy, or (None, why)."""
    why = 'not started'
    for attempt in range(3):               # another test may take the port first
        dep = cls(root, binary, attempt)
        dep.port = dt.free_port()
        try:
            dep.setup()
            add_settings(dep, lines)
            dep.own()
            dep.start()
            up = dt.wait_until(lambda: dt._health(dep) or any(
                p.poll() is not None for p, _ in dep.procs), 20, 0.1) and \
                all(p.poll() is None for p, _ in dep.procs) and dt._health(dep)
        except Exception as e:  # noqa: BLE001 -- reported, and the servers stopped
            dep.stop()
            dep.kill_leftovers()
            return None, dep, 'set up from deploy/ failed: %r\n%s' % (e, dep.log_tail())
        if up:
            return dep, dep, ''
        why = 'no 200 from %s/health within 20 s\n%s' % (dep.base, dep.log_tail())
        bound = 'Address already in use' in dep.log_tail(50)
        dep.stop()
        dep.kill_leftovers()
        if not bound:
            break
    return None, dep, why


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--server', required=True, choices=sorted(SERVERS))
    ap.add_argument('--bin', required=True)
    ap.add_argument('--conf', default=os.path.join(HERE, 'holdfast-conformance.conf'))
    ap.add_argument('--info', required=True, help='JSON written once the server is up')
    ap.add_argument('--logs', help='copy the servers\' logs here when stopped')
    ap.add_argument('--max-seconds', type=float, default=1500)
    ap.add_argument('--keep', action='store_true', help='keep the temp dir')
    args = ap.parse_args()
    name = args.server
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        say(name, 'FAILED: no holdfast binary at %s' % binary)
        return 1
    missing = [x for x in SERVERS[name].needs if not os.path.exists(x)]
    if missing:
        say(name, 'FAILED: %s not installed' % ' '.join(missing))
        return 1
    lines, warnings = settings_lines(args.conf, binary, name)
    root = tempfile.mkdtemp(prefix='hf-conformance-%s-' % name)
    os.chmod(root, 0o755)
    ok = True
    dep = None
    try:
        dep, tried, why = start(SERVERS[name], root, binary, lines, name)
        if dep is None:
            say(name, 'FAILED to start: %s' % why)
            ok = False
            dep = tried
        else:
            url = 'http://127.0.0.1:%d%s' % (dep.port, dep.base)
            tmp = args.info + '.tmp'
            with open(tmp, 'w') as f:
                json.dump({'url': url, 'port': dep.port, 'dir': dep.dir,
                           'warnings': warnings}, f)
            os.rename(tmp, args.info)
            say(name, 'up at %s (servers as %s, files in %s)' % (
                url, 'nobody' if dt.RUN_AS else 'the current user', dep.dir))
            end = time.monotonic() + args.max_seconds
            while not stopping:
                dead = [p for p, _ in dep.procs if p.poll() is not None]
                if dead:
                    say(name, 'FAILED: a server process exited (%s, status %s) while the '
                        'tests ran\n%s' % (' '.join(dead[0].args), dead[0].returncode,
                                           dep.log_tail()))
                    ok = False
                    break
                if time.monotonic() > end:
                    say(name, 'FAILED: still running after --max-seconds %g' % args.max_seconds)
                    ok = False
                    break
                time.sleep(0.2)
            stopped = dep.stop()
            left = []
            if not dt.wait_until(lambda: not dep.leftovers(), 10, 0.1):
                left = dep.leftovers()
            if stopped and not left:
                say(name, 'stopped, no process left behind')
            else:
                say(name, 'FAILED to stop cleanly: stopped in time: %s; left: %r' % (stopped, left))
                ok = False
    except Exception as e:  # noqa: BLE001
        say(name, 'FAILED: %r' % e)
        ok = False
    finally:
        if dep is not None:
            dep.stop()
            dep.kill_leftovers()
            if args.logs:
                shutil.rmtree(args.logs, ignore_errors=True)
                try:
                    shutil.copytree(dep.logs, args.logs)
                    for extra in ('holdfast.conf', 'holdfast-site.conf', 'holdfast-spawn.conf',
                                  'holdfast-socket.conf', 'lighttpd.conf', 'nginx.conf'):
                        if os.path.exists(dep.p('conf', extra)):
                            shutil.copy(dep.p('conf', extra), args.logs)
                except OSError as e:
                    say(name, 'could not copy the logs: %r' % e)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
