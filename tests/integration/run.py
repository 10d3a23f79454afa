#!/usr/bin/env python3
"""Run holdfast's integration tests.

    python3 tests/integration/run.py [--bin PATH] [-k PATTERN] [-v]

--bin defaults to $HOLDFAST_BIN, else ./holdfast (from the current directory,
then the top of the source tree). Prints one line per test and a summary whose
last line is exactly "N passed, M failed"; exits 1 if anything failed or
errored (skips are listed but count as neither).
"""
import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))


def find_bin(arg):
    """--bin if given, else $HOLDFAST_BIN, else the first ./holdfast or TOP/holdfast."""
    if arg:
        return os.path.abspath(arg)
    if os.environ.get('HOLDFAST_BIN'):
        return os.path.abspath(os.environ['HOLDFAST_BIN'])
    for cand in ('./holdfast', os.path.join(TOP, 'holdfast')):
        if os.path.exists(cand):
            return os.path.abspath(cand)
    return os.path.abspath('./holdfast')


class Result(unittest.TextTestResult):
    """Records timings and prints one line per test."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed = []
        self.started = {}

    def startTest(self, test):
        self.started[test.id()] = time.monotonic()
        self.stream.write('%-100s ' % test.id().replace('test_fcgi.', ''))
        self.stream.flush()
        unittest.TestResult.startTest(self, test)

    def took(self, test):
        return time.monotonic() - self.started.get(test.id(), time.monotonic())

    def addSuccess(self, test):
        unittest.TestResult.addSuccess(self, test)
        self.passed.append(test)
        self.stream.write('ok (%.1fs)\n' % self.took(test))

    def addFailure(self, test, err):
        unittest.TestResult.addFailure(self, test, err)
        self.stream.write('FAIL (%.1fs)\n' % self.took(test))

    def addError(self, test, err):
        unittest.TestResult.addError(self, test, err)
        self.stream.write('ERROR (%.1fs)\n' % self.took(test))

    def addSkip(self, test, reason):
        unittest.TestResult.addSkip(self, test, reason)
        self.stream.write('skipped: %s\n' % reason)

    def addExpectedFailure(self, test, err):
        unittest.TestResult.addExpectedFailure(self, test, err)
        self.stream.write('expected failure\n')

    def addUnexpectedSuccess(self, test):
        unittest.TestResult.addUnexpectedSuccess(self, test)
        self.stream.write('unexpected success\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bin', help='the holdfast binary (default $HOLDFAST_BIN or ./holdfast)')
    ap.add_argument('-k', dest='patterns', action='append', default=None,
                    help='only tests whose name contains this (repeatable)')
    args = ap.parse_args()

    binpath = find_bin(args.bin)
    if not binpath or not os.access(binpath, os.X_OK):
        print('holdfast binary not found or not executable: %s' % binpath, file=sys.stderr)
        print('0 passed, 1 failed')
        return 2
    os.environ['HOLDFAST_BIN'] = binpath
    sys.path.insert(0, HERE)
    print('holdfast integration tests: %s' % binpath, flush=True)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ['*%s*' % p for p in args.patterns]
    suite = loader.discover(HERE, pattern='test_*.py', top_level_dir=HERE)
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=0, resultclass=Result,
                                     buffer=False)
    # TextTestRunner prints its own summary; ours comes last.
    result = runner.run(suite)
    elapsed = time.monotonic() - t0
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = len(result.passed) + len(result.expectedFailures)
    import hfutil
    left = hfutil.leftovers(kill=True)
    print('=' * 70)
    for test, _ in result.failures + result.errors:
        print('FAILED: %s' % test.id())
    if left:
        print('FAILED: processes started by the tests were still running at the end '
              '(killed now): %r' % left)
        failed += 1
    for test, reason in result.skipped:
        print('skipped: %s (%s)' % (test.id(), reason))
    print('%d tests in %.1fs' % (result.testsRun, elapsed))
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or result.testsRun == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
