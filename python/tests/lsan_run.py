# SPDX-License-Identifier: MIT
"""Runs a test module (as `python -m` would) or a script, then
LeakSanitizer's check, for the sanitized build (python/tests/run.sh with a
build made with -Db_sanitize=address,undefined: the interpreter runs with
libasan preloaded and PYTHONMALLOC=malloc, so that every Python object is
a malloc block LeakSanitizer can see and follow).

    python/tests/lsan_run.py MODULE|SCRIPT.py [ARG ...]

Why the check is made here, as the first step of the interpreter's
finalization (the last atexit callback: the main module has returned,
threads are joined, modules are still whole), and not by LeakSanitizer at
the process's exit: CPython does not free everything at exit, and what it
leaves is unreachable by then, so an exit-time check reports CPython's own
leftovers. Checked here, after a garbage collection, a reported block is
memory nothing points to while the interpreter is still whole: a Python
object whose reference count was never dropped, or C memory nobody freed.
Not from a running function either: LeakSanitizer does not scan the
memory CPython keeps its frames in (mmap'd chunks), so what only a live
frame refers to (its locals, its frame object) would look leaked.
__lsan_do_leak_check also turns the exit-time check off.

Nothing is suppressed. The one exception is made by allocation time, not
by stack: the third-party modules in UNRECORDED are imported first with
LeakSanitizer's recording off for this thread, because their Cython
extension modules (Debian 12: aiohttp's _helpers and _http_writer,
frozenlist's _frozenlist) leave code objects and tuples nothing points to
when they initialize (LeakSanitizer reports the same with asyncio's own
loop). What these modules allocate afterwards, and all of pact's memory,
is checked.

Child processes (CPython's tests start interpreters with -E, which
ignores PYTHONMALLOC: pymalloc's arenas hide pointers from
LeakSanitizer) run with detect_leaks=0; AddressSanitizer and
UndefinedBehaviorSanitizer stay on in them."""
import atexit
import ctypes
import gc
import importlib
import os
import runpy
import sys

UNRECORDED = ('aiohttp', 'aiohttp.web', 'frozenlist', 'multidict', 'yarl')

# Kept in the module's namespace, not in a function's locals (see above).
try:
    _lsan = ctypes.CDLL(None)
    _lsan_do_leak_check = _lsan.__lsan_do_leak_check
    _lsan_disable, _lsan_enable = _lsan.__lsan_disable, _lsan.__lsan_enable
except AttributeError:  # no sanitizer runtime
    _lsan_do_leak_check = None


def import_unrecorded(names):
    """Imports the modules named with LeakSanitizer's recording off (see
    above); does nothing without the sanitizer runtime."""
    if _lsan_do_leak_check is None:
        return
    _lsan_disable()
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    finally:
        _lsan_enable()


def leak_check():
    """LeakSanitizer's check now; exits the process if something leaked.
    Does nothing without the sanitizer runtime."""
    if _lsan_do_leak_check is None:
        return
    for _ in range(3):  # cycles freed by one collection free others
        gc.collect()
    sys.stdout.flush()
    sys.stderr.flush()
    _lsan_do_leak_check()


def run(target, args):
    """python -m target args, or python target args for a script; its
    exit status."""
    options = os.environ.get('ASAN_OPTIONS', '')
    os.environ['ASAN_OPTIONS'] = (options + ':' if options else '') + \
        'detect_leaks=0'
    sys.argv = [target] + args
    try:
        if target.endswith('.py'):
            sys.path[0] = os.path.dirname(os.path.abspath(target))
            runpy.run_path(target, run_name='__main__')
        else:
            runpy.run_module(target, run_name='__main__', alter_sys=True)
    except SystemExit as e:
        return e.code
    return 0


if __name__ == '__main__':
    import_unrecorded(UNRECORDED)
    atexit.register(leak_check)  # registered first, so called last
    sys.exit(run(sys.argv[1], sys.argv[2:]))
