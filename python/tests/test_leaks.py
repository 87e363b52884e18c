# SPDX-License-Identifier: MIT
"""Leaks, the short version CI runs (make leak-python runs 10^6 requests):
leak_run.py in a child process of its own (a clean RSS), on the engine
PACT_ENGINE names: 20,000 requests through a protocol server in 400
connections, 2,000 over TLS in 40, 1,200 through aiohttp's server and
client; the fd count and pact's operations in flight must be the same at
every sample, no transport may be left alive at one, and RSS may grow by
at most 1 MiB after the warm-up (over the full run's 10^6 requests it
grows by about 0.1 MiB)."""
import os
import subprocess
import sys
import unittest

LEAK_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'leak_run.py')
ENGINE = os.environ.get('PACT_ENGINE', 'auto')
# Under AddressSanitizer (python/tests/run.sh with a sanitized build) freed
# memory waits in its quarantine (256 MiB) before it is reused, and RSS
# would measure that: the child runs without the quarantine, and with
# LeakSanitizer's check at its end (lsan_run.py).
SANITIZED = 'libasan' in os.environ.get('LD_PRELOAD', '')
LSAN_RUN = [os.path.join(os.path.dirname(LEAK_RUN), 'lsan_run.py')] \
    if SANITIZED else []


class ShortLeakRunTests(unittest.TestCase):
    def leak_run(self, server, requests):
        p = subprocess.run(
            [sys.executable] + LSAN_RUN +
            [LEAK_RUN, '--server', server, '--engine', ENGINE,
             '--requests', str(requests), '--rss-growth-kib', '1024'],
            capture_output=True, text=True, timeout=600,
            env=dict(os.environ,
                     ASAN_OPTIONS='detect_leaks=1:quarantine_size_mb=0')
            if SANITIZED else None)
        result = [line for line in p.stdout.splitlines()
                  if line.startswith('result ')]
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(len(result), 1, p.stdout + p.stderr)
        fields = dict(kv.split('=') for kv in result[0].split()[1:-1])
        self.assertEqual(fields['requests'], str(requests))
        self.assertEqual(fields['fds_flat'], 'True')
        self.assertEqual(fields['fds_start'], fields['fds_end'])
        self.assertEqual(fields['transports_left'], '0')
        self.assertEqual(fields['ops_live_flat'], 'True')
        self.assertLessEqual(int(fields['rss_growth_kib']), 1024, result[0])
        self.assertNotIn('Traceback', p.stderr)

    def test_protocol_server(self):
        self.leak_run('protocol', 20000)

    def test_tls(self):
        self.leak_run('tls', 2000)

    def test_aiohttp(self):
        self.leak_run('aiohttp', 1200)


if __name__ == '__main__':
    unittest.main()
