#!/usr/bin/env python3
"""verdict.py -- one server's Durable Streams conformance verdict from vitest's JSON report.

    verdict.py --server NAME --report FILE --expected expected-failures.txt
               --suite-package DIR --counts FILE [--note TEXT ...]

A test is named by its full path as vitest prints it: the describe() titles
and the test title joined by " > " ("Basic Stream Operations > should create
a stream").  expected-failures.txt lists such names, one a line; `#` starts a
comment line; an entry may begin with "[server,server] " to apply to those
servers only.  Every entry must have a comment saying why: each block of
entries (lines up to a blank line) starts with one.

The server FAILS when
  - a test failed that is not listed (an unexpected failure),
  - a listed test passed (the list must stay true: take it off),
  - a test was skipped (or todo) that is not listed,
  - a listed name is not a test of the suite (stale or mistyped entry;
    judged only when every test ran),
  - fewer tests ran (passed + failed + skipped) than the suite defines --
    SUITE_TESTS below, per version of the suite; tests that did not run
    count as failures, so a run that crashed or timed out cannot pass,
  - the report says the test file itself failed (an error outside tests).

Prints "conformance NAME: ..." and, one a line, the unexpected failures
(with the first line of their error), the listed tests that passed, the
unlisted skips and stale entries: ready to paste into, or remove from,
expected-failures.txt.  Writes "PASSED FAILED" to --counts, where PASSED is
the passed tests and FAILED the count of everything above.
"""
import argparse
import json
import os
import sys

# How many tests each version of @durable-streams/server-conformance-tests
# defines, counted from its JSON report (dist/test-runner.js: its
# "Reserved subscription APIs" describe.runIf(options.subscriptions) is
# reported as 6 skipped tests, since the runner does not set that option).
SUITE_TESTS = {
    '0.3.6': 338,
}


def load_expected(path, server):
    """({name: line number} for this server, [errors])."""
    entries, errors = {}, []
    block_has_comment = False
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip('\n').strip()
            if not line:
                block_has_comment = False
                continue
            if line.startswith('#'):
                block_has_comment = True
                continue
            servers = None
            if line.startswith('['):
                close = line.find('] ')
                if close < 0:
                    errors.append('%s:%d: "[servers] name" expected' % (path, n))
                    continue
                servers = [s.strip() for s in line[1:close].split(',')]
                line = line[close + 2:].strip()
            if not block_has_comment:
                errors.append('%s:%d: entry without a comment saying why it may fail: %s'
                              % (path, n, line))
            if servers is not None and server not in servers:
                continue
            if line in entries:
                errors.append('%s:%d: listed twice (first on line %d): %s'
                              % (path, n, entries[line], line))
            entries[line] = n
    return entries, errors


def first_line(msgs):
    if not msgs:
        return ''
    s = msgs[0].strip().split('\n')[0]
    if s == 'Error: STACK_TRACE_ERROR':
        s = 'timed out (vitest reports a test timeout as STACK_TRACE_ERROR)'
    return s[:240]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--server', required=True)
    ap.add_argument('--report', required=True)
    ap.add_argument('--expected', required=True)
    ap.add_argument('--suite-package', required=True,
                    help='node_modules/@durable-streams/server-conformance-tests')
    ap.add_argument('--counts', required=True)
    ap.add_argument('--note', action='append', default=[],
                    help='a failure found outside the report (counted as one)')
    args = ap.parse_args()
    name = args.server
    problems = []          # (kind, text): each one failure
    for note in args.note:
        problems.append(('failure', note))

    with open(os.path.join(args.suite_package, 'package.json')) as f:
        version = json.load(f)['version']
    defined = SUITE_TESTS.get(version)
    if defined is None:
        problems.append(('failure', 'suite version %s has no test count in verdict.py SUITE_TESTS '
                         '(count its tests from a JSON report and add it)' % version))

    expected, errors = load_expected(args.expected, name)
    for e in errors:
        problems.append(('failure', e))

    results = []
    file_errors = []
    try:
        with open(args.report) as f:
            report = json.load(f)
        for tf in report.get('testResults', []):
            if tf.get('status') == 'failed' and tf.get('message'):
                file_errors.append(tf['message'].strip().split('\n')[0][:300])
            for a in tf.get('assertionResults', []):
                full = ' > '.join(list(a.get('ancestorTitles', [])) + [a.get('title', '')])
                results.append((full, a.get('status'), a.get('failureMessages') or []))
    except (OSError, ValueError) as e:
        problems.append(('failure', 'no usable JSON report %s (%s): the suite did not run to its '
                         'end' % (args.report, e.__class__.__name__)))
    for e in file_errors:
        problems.append(('failure', 'the test file failed outside any test: %s' % e))

    passed = failed_expected = skipped_listed = 0
    unexpected, listed_passed, unlisted_skipped = [], [], []
    seen = set()
    for full, status, msgs in results:
        seen.add(full)
        listed = full in expected
        if status == 'passed':
            passed += 1
            if listed:
                listed_passed.append(full)
        elif status == 'failed':
            if listed:
                failed_expected += 1
            else:
                unexpected.append((full, first_line(msgs)))
        else:                               # skipped, pending, todo, disabled
            if listed:
                skipped_listed += 1
            else:
                unlisted_skipped.append((full, status))
    total = len(results)
    # A name is stale only if the whole suite ran and it is not among its tests.
    complete = defined is not None and total >= defined
    stale = sorted((n, e) for e, n in expected.items() if e not in seen) if complete else []
    failed = failed_expected + len(unexpected)
    skipped = skipped_listed + len(unlisted_skipped)

    for full, why in unexpected:
        problems.append(('unexpected failure', '%s\n      %s' % (full, why)))
    for full in listed_passed:
        problems.append(('listed but passed (take it off the list)', full))
    for full, status in unlisted_skipped:
        problems.append(('%s, not listed' % status, full))
    for n, e in stale:
        problems.append(('listed, not a test of the suite', '%s (%s:%d)' % (e, args.expected, n)))
    missing = 0
    if defined is not None and total < defined:
        missing = defined - total
        problems.append(('failure', '%d of the %d tests the suite defines did not run (counted as '
                         '%d failures)' % (missing, defined, missing)))
    elif defined is not None and total > defined:
        print('conformance %s: note: %d tests ran, SUITE_TESTS says %s defines %d: update it'
              % (name, total, version, defined))

    bad = len(problems) + max(missing - 1, 0)
    with open(args.counts, 'w') as f:
        f.write('%d %d\n' % (passed, bad))
    print('conformance %s: %d passed, %d failed (%d expected), %d skipped (%d listed); '
          '%d of %s tests ran (suite %s); %d unexpected failures, %d listed but passed -> %s'
          % (name, passed, failed, failed_expected, skipped, skipped_listed, total,
             defined if defined is not None else '?', version, len(unexpected),
             len(listed_passed), 'FAIL' if bad else 'ok'))
    for kind, text in problems:
        print('  %s: %s' % (kind, text))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
