# SPDX-License-Identifier: MIT
"""pytest-asyncio (Debian's python3-pytest-asyncio, unchanged) running tests
on pact.asyncio: pytest runs pytest_asyncio_suite/ in a child process, whose
tests get pact loops from pytest-asyncio's event_loop fixture (pact's policy
installed in conftest.py) or from a module's own event_loop fixture. Every
test there must pass, none skipped; on the engine PACT_ENGINE names."""
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     'pytest_asyncio_suite')
# The tests the suite holds (parametrized ones counted per case): a test
# pytest did not collect must not pass unnoticed.
EXPECTED = {
    'test_fixture_override.py': {
        'test_runs_on_the_overriding_loop', 'test_datagrams_on_it'},
    'test_policy_loop.py': {
        'test_the_running_loop_is_pact', 'test_echo_through_an_async_fixture',
        'test_parametrized_tasks[1]', 'test_parametrized_tasks[10]',
        'test_parametrized_tasks[100]',
        'test_a_synchronous_test_drives_the_fixture_loop',
        'test_each_test_gets_a_fresh_loop'},
}


class PytestAsyncioTests(unittest.TestCase):
    def test_the_suite_passes_on_pact_loops(self):
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, 'report.xml')
            env = dict(os.environ)
            # Only pytest-asyncio: other plugins installed on the machine
            # must not change what runs.
            env['PYTEST_DISABLE_PLUGIN_AUTOLOAD'] = '1'
            p = subprocess.run(
                [sys.executable, '-W', 'default', '-m', 'pytest',
                 '-p', 'pytest_asyncio.plugin', '-p', 'no:cacheprovider',
                 '-c', os.path.join(SUITE, 'pytest.ini'),
                 '--junitxml', report, '-q', SUITE],
                capture_output=True, text=True, env=env, timeout=300)
            output = p.stdout + p.stderr
            self.assertEqual(p.returncode, 0, output)
            self.assertNotIn('Exception ignored', output)
            self.assertNotIn('Traceback', output)
            ran = {}
            for case in ET.parse(report).getroot().iter('testcase'):
                module = case.get('classname').rsplit('.', 1)[-1] + '.py'
                outcome = [c.tag for c in case]
                self.assertEqual(outcome, [], (case.get('name'), output))
                ran.setdefault(module, set()).add(case.get('name'))
            self.assertEqual(ran, EXPECTED)


if __name__ == '__main__':
    unittest.main()
