# SPDX-License-Identifier: MIT
"""CPython's own asyncio test suites (Debian's libpython3.11-testsuite) with
pact.asyncio as the loop.

Every loop the tests get from the event loop policy (asyncio.new_event_loop,
asyncio.run, asyncio.Runner, IsolatedAsyncioTestCase) is a pact loop:
asyncio.DefaultEventLoopPolicy is replaced by pact's policy before the
suites import, so even their set_event_loop_policy(None) resets to it.

    PYTHONPATH=build/python /usr/bin/python3 python/tests/cpython_suites.py \
        [--skips python/tests/cpython-skips.txt] [--without module,...] \
        [suite ...]

Without suites named, all of SUITES below run (but those of the modules
named after --without). A suite is
  module                 the module's tests,
  module!A,B             the module without its test classes A and B,
  module:Mixin[+Mixin2]  a loop-parametrized mixin (or mixins combined, as
                         the module combines them for each of asyncio's own
                         loops) in a test class whose create_event_loop()
                         and new_loop() make a pact loop.
Some modules build their loop by hand (asyncio.SelectorEventLoop(), a
mocked BaseEventLoop, asyncio's virtual-time TestLoop) where nothing in the
test needs that loop: PACT_LOOP_PATCHES makes those classes use a pact loop.

Skips: one test id per line, then its reason ('#' lines are comments).
Prints per suite: tests run, failures, errors, skipped, pact loops created.
Exit status 0 only if every suite passed and made pact loops (but the
NO_LOOP modules, which make none); 2 for a module that is not a suite.
"""
import argparse
import asyncio
import importlib
import os
import sys
import time
import unittest

import pact.asyncio as pa

# Every loop-dependent module of test_asyncio, each in the form that runs
# its tests on pact; the others are in LEFT_OUT and NO_LOOP below. Within
# modules, the classes named after '!' are those the module runs
# on asyncio's own loops (its Selector/Epoll/Poll/Select/Proactor
# variants, which the ':' suite next to it runs on pact instead), or
# white-box tests of asyncio's own classes that pact does not use. Where a
# module appears only as a ':' suite (test_buffered_proto, test_sendfile,
# test_server, test_sock_lowlevel), the rest of it is that mixin run on
# asyncio's own loops.
SUITES = [
    'test_base_events',
    'test_buffered_proto:BaseTestBufferedProtocol',
    'test_context',
    # HandleTests, TimerTests, PolicyTests, get_event_loop, servers...
    'test_events!EPollEventLoopTests,PollEventLoopTests,SelectEventLoopTests',
    'test_events:UnixEventLoopTestsMixin+SubprocessTestsMixin',
    'test_futures',
    'test_futures2',
    'test_locks',
    'test_pep492',
    'test_queues',
    'test_runners',
    'test_sendfile:SendfileTestsBase',
    # The selector variant adds a Unix server test to the mixin's.
    'test_server:SelectorStartServerTests',
    'test_sock_lowlevel:BaseSockTestsMixin',
    'test_ssl',
    'test_sslproto!SelectorStartTLSTests,ProactorStartTLSTests',
    'test_sslproto:BaseStartTLS',
    'test_streams',
    'test_subprocess',
    'test_taskgroups',
    'test_tasks',
    'test_threads',
    'test_timeouts',
    # SelectorEventLoopSignalTests: asyncio's signal code with the signal
    # module mocked inside asyncio.unix_events; Unix{Read,Write}Pipe-
    # TransportTests: asyncio's pipe transport classes on a mocked loop.
    'test_unix_events!SelectorEventLoopSignalTests,'
    'UnixReadPipeTransportTests,UnixWritePipeTransportTests',
    'test_waitfor',
]

# Modules of test_asyncio that SUITES leaves out, as they test another
# loop's internals wholesale. Named on the command line, they are refused:
# their tests would run on asyncio's own loops, not on pact.
LEFT_OUT = {
    'test_selector_events': "asyncio's selector loop and transports, with "
                            "mocked selectors and sockets",
    'test_proactor_events': "the Windows proactor loop's internals",
    'test_windows_events': 'the Windows proactor (skipped on Linux)',
    'test_windows_utils': "the Windows proactor's pipes (skipped on Linux)",
}
# Modules in which no event loop is involved: the abstract base classes'
# NotImplementedError and no-op methods, and the flow control mixin on a
# mocked loop. SUITES leaves them out, as they show nothing about pact;
# named on the command line they run, judged by their results alone (any
# other suite must also have made pact loops), and say that no loop ran.
NO_LOOP = {'test_protocols', 'test_transports'}

loops_created = 0
_init = pa.Loop.__init__


def _counting_init(self, *args, **kwargs):
    global loops_created
    loops_created += 1
    _init(self, *args, **kwargs)


pa.Loop.__init__ = _counting_init
asyncio.DefaultEventLoopPolicy = pa.EventLoopPolicy
asyncio.set_event_loop_policy(None)


def _patch_test_runners(module):
    # Its loop is a BaseEventLoop with a mocked selector (the base class
    # cannot run without one); shutdown_asyncgens is replaced by a marker
    # that tearDown checks. The same on a pact loop.
    def new_loop(self):
        loop = pa.new_event_loop()
        loop.shutdown_ag_run = False

        async def shutdown_asyncgens():
            loop.shutdown_ag_run = True
        loop.shutdown_asyncgens = shutdown_asyncgens
        return loop
    module.BaseTest.new_loop = new_loop


def _patch_test_pep492(module):
    # Its loop is a BaseEventLoop with a mocked selector.
    from test.test_asyncio import utils as test_utils

    def setUp(self):
        test_utils.TestCase.setUp(self)
        self.loop = pa.new_event_loop()
        self.set_event_loop(self.loop)
    module.BaseTest.setUp = setUp


def _patch_test_futures(module):
    # Its loop is asyncio's virtual-time TestLoop, whose clock no test here
    # moves: futures, callbacks and their scheduling on a pact loop.
    from test.test_asyncio import utils as test_utils

    def new_test_loop(self, gen=None):
        if gen is not None:
            return test_utils.TestCase.new_test_loop(self, gen)
        loop = pa.new_event_loop()
        self.set_event_loop(loop)
        return loop
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, test_utils.TestCase):
            obj.new_test_loop = new_test_loop


def _patch_test_unix_events(module):
    # create_unix_server/create_unix_connection are asyncio's code on
    # pact; the class makes asyncio.SelectorEventLoop() by name.
    from test.test_asyncio import utils as test_utils

    def setUp(self):
        test_utils.TestCase.setUp(self)
        self.loop = pa.new_event_loop()
        self.set_event_loop(self.loop)
    module.SelectorEventLoopUnixSocketTests.setUp = setUp


PACT_LOOP_PATCHES = {
    'test_runners': _patch_test_runners,
    'test_pep492': _patch_test_pep492,
    'test_futures': _patch_test_futures,
    'test_unix_events': _patch_test_unix_events,
}


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


def drop_classes(suite, names):
    """The suite without the tests of the classes named."""
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(drop_classes(test, names))
        elif type(test).__name__ not in names:
            kept.addTest(test)
    return kept


def load(name):
    module_name, _, mixins = name.partition(':')
    module_name, _, without = module_name.partition('!')
    patch = PACT_LOOP_PATCHES.get(module_name)
    module = importlib.import_module('test.test_asyncio.' + module_name)
    if patch:
        patch(module)
    if not mixins:
        suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        missing = [c for c in without.split(',') if c and not hasattr(module, c)]
        if missing:
            raise SystemExit(f'{name}: no class {", ".join(missing)}')
        return drop_classes(suite, set(without.split(',')) - {''})
    from test.test_asyncio import utils as test_utils
    mixin_classes = tuple(getattr(module, m) for m in mixins.split('+'))
    # Functional mixins (FunctionalTestCaseMixin) make their loop with
    # new_loop() and pair with unittest.TestCase; the others with
    # create_event_loop() and test_utils.TestCase.
    case = (unittest.TestCase if hasattr(mixin_classes[0], 'new_loop')
            else test_utils.TestCase)
    cls = type('PactLoopTests', mixin_classes + (case,),
               {'create_event_loop': lambda self: pa.new_event_loop(),
                'new_loop': lambda self: pa.new_event_loop(),
                '__module__': module.__name__})
    return unittest.defaultTestLoader.loadTestsFromTestCase(cls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--skips', default=os.path.join(os.path.dirname(__file__),
                                                    'cpython-skips.txt'))
    ap.add_argument('-v', '--verbose', action='store_true')
    ap.add_argument('--without', default='', metavar='MODULE[,MODULE...]',
                    help='leave out the suites of these modules')
    ap.add_argument('suites', nargs='*')
    args = ap.parse_args()
    # A bare module name given on the command line stands for that
    # module's entries above: loaded as a plain module it would run the
    # tests on asyncio's own loops, which the pact-loop count below then
    # rejects.
    asked = []
    for s in args.suites:
        asked += ([e for e in SUITES if e.split(':')[0].split('!')[0] == s]
                  or [s])
    suites = [s for s in asked or SUITES
              if s.split(':')[0].split('!')[0] not in
              args.without.split(',')]
    in_suites = {e.split(':')[0].split('!')[0] for e in SUITES}
    for name in suites:
        module = name.split(':')[0].split('!')[0]
        if module in LEFT_OUT:
            print(f'{module} is left out, as it tests {LEFT_OUT[module]}: '
                  'its tests would not run on pact', file=sys.stderr)
            return 2
        if module not in in_suites and module not in NO_LOOP:
            print(f'{module}: no such suite; the suites are '
                  f'{", ".join(sorted(in_suites | NO_LOOP))}',
                  file=sys.stderr)
            return 2
    skips = read_skips(args.skips)
    applied = set()
    ok = True
    totals = [0, 0, 0, 0]
    skip_reasons = {}
    for name in suites:
        global loops_created
        loops_created = 0
        suite = load(name)
        apply_skips(suite, skips, applied)
        runner = unittest.TextTestRunner(verbosity=2 if args.verbose else 0,
                                         stream=sys.stderr)
        started = time.monotonic()
        result = runner.run(suite)
        seconds = time.monotonic() - started
        counts = (result.testsRun, len(result.failures), len(result.errors),
                  len(result.skipped))
        totals = [a + b for a, b in zip(totals, counts)]
        for test, reason in result.skipped:
            skip_reasons.setdefault(reason, []).append(test.id())
        no_loop = name in NO_LOOP
        print(f'{name}: run {counts[0]}, failures {counts[1]}, errors '
              f'{counts[2]}, skipped {counts[3]}, pact loops {loops_created}'
              f'{" (no event loop involved)" if no_loop else ""}, '
              f'{seconds:.1f} s', flush=True)
        if counts[0] == 0:
            print(f'{name}: FAILED: no test ran', flush=True)
            ok = False
        elif loops_created == 0 and not no_loop:
            print(f'{name}: FAILED: it made no pact loop, so its tests ran '
                  'on another loop', flush=True)
            ok = False
        ok = ok and result.wasSuccessful()
    print(f'total: run {totals[0]}, passed '
          f'{totals[0] - totals[1] - totals[2] - totals[3]}, failures '
          f'{totals[1]}, errors {totals[2]}, skipped {totals[3]}')
    if args.verbose:
        for reason, ids in sorted(skip_reasons.items()):
            print(f'skipped {len(ids)}: {reason}')
            for i in ids:
                print('   ', i)
    ran = {n.split(':')[0].split('!')[0] for n in suites}
    unused = [t for t in skips if t not in applied and t.split('.')[2] in ran]
    for t in unused:
        print('skip list names a test that did not run here:', t)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
