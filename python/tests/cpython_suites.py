# SPDX-License-Identifier: MIT
"""CPython's own asyncio test suites (Debian's libpython3.11-testsuite) with
pact.asyncio as the loop.

Every loop the tests get from the event loop policy (asyncio.new_event_loop,
asyncio.run, asyncio.Runner, IsolatedAsyncioTestCase) is a pact loop:
asyncio.DefaultEventLoopPolicy is replaced by pact's policy before the
suites import, so even their set_event_loop_policy(None) resets to it.
Tests that build asyncio's own test loop (test_utils.TestLoop) or a
SelectorEventLoop by name are not about the loop under test and run as
they would anyway.

    PYTHONPATH=build/python /usr/bin/python3 python/tests/cpython_suites.py \
        [--skips python/tests/cpython-skips.txt] test_tasks test_locks ...

A suite named module:Mixin runs a loop-parametrized mixin of that module
(test_events:UnixEventLoopTestsMixin) in a test class whose
create_event_loop() makes a pact loop, as the module does for each of
asyncio's own loops.

Skips: one test id per line, then its reason ('#' lines are comments).
Prints per suite: tests run, failures, errors, skipped, pact loops created.
Exit status 0 only if every suite passed.
"""
import argparse
import asyncio
import os
import sys
import unittest

import pact.asyncio as pa

loops_created = 0
_init = pa.Loop.__init__


def _counting_init(self, *args, **kwargs):
    global loops_created
    loops_created += 1
    _init(self, *args, **kwargs)


pa.Loop.__init__ = _counting_init
asyncio.DefaultEventLoopPolicy = pa.EventLoopPolicy
asyncio.set_event_loop_policy(None)


def read_skips(path):
    skips = {}
    if not path or not os.path.exists(path):
        return skips
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            test_id, _, reason = line.partition(' ')
            skips[test_id] = reason.strip() or 'listed in ' + path
    return skips


def apply_skips(suite, skips, applied):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            apply_skips(test, skips, applied)
            continue
        reason = skips.get(test.id())
        if reason:
            applied.add(test.id())
            setattr(test, test._testMethodName,
                    unittest.skip(reason)(getattr(test, test._testMethodName)))


def load(name):
    module_name, _, mixin = name.partition(':')
    module_name = 'test.test_asyncio.' + module_name
    if not mixin:
        return unittest.defaultTestLoader.loadTestsFromName(module_name)
    import importlib
    from test.test_asyncio import utils as test_utils
    module = importlib.import_module(module_name)
    mixin_cls = getattr(module, mixin)
    # Functional mixins (FunctionalTestCaseMixin) make their loop with
    # new_loop() and pair with unittest.TestCase; the others with
    # create_event_loop() and test_utils.TestCase.
    case = unittest.TestCase if hasattr(mixin_cls, 'new_loop') else test_utils.TestCase
    cls = type('PactLoopTests', (mixin_cls, case),
               {'create_event_loop': lambda self: pa.new_event_loop(),
                'new_loop': lambda self: pa.new_event_loop(),
                '__module__': module_name})
    return unittest.defaultTestLoader.loadTestsFromTestCase(cls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--skips', default=os.path.join(os.path.dirname(__file__),
                                                    'cpython-skips.txt'))
    ap.add_argument('-v', '--verbose', action='store_true')
    ap.add_argument('suites', nargs='+')
    args = ap.parse_args()
    skips = read_skips(args.skips)
    applied = set()
    ok = True
    totals = [0, 0, 0, 0]
    for name in args.suites:
        global loops_created
        loops_created = 0
        suite = load(name)
        apply_skips(suite, skips, applied)
        runner = unittest.TextTestRunner(verbosity=2 if args.verbose else 0,
                                         stream=sys.stderr)
        result = runner.run(suite)
        counts = (result.testsRun, len(result.failures), len(result.errors),
                  len(result.skipped))
        totals = [a + b for a, b in zip(totals, counts)]
        print(f'{name}: run {counts[0]}, failures {counts[1]}, errors '
              f'{counts[2]}, skipped {counts[3]}, pact loops {loops_created}',
              flush=True)
        ok = ok and result.wasSuccessful() and loops_created > 0
    print(f'total: run {totals[0]}, failures {totals[1]}, errors {totals[2]}, '
          f'skipped {totals[3]}')
    ran = {n.split(':')[0] for n in args.suites}
    unused = [t for t in skips if t not in applied and t.split('.')[2] in ran]
    for t in unused:
        print('skip list names a test that did not run here:', t)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
