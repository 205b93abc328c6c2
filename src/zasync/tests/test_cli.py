"""``zasync demo`` runs in a subprocess, exits 0 and reports."""
import os
import shutil
import tempfile
import unittest

from zasync.testing.processes import run_command


class TestDemo(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='zasync-test-cli-')

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def run_zasync(self, *args):
        return run_command(*args, cwd=self.dir, ZASYNC_UUID=None)

    def test_demo(self):
        done = self.run_zasync('demo')
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        out = done.stdout
        self.assertIn('25 jobs queued', out)
        self.assertIn('20 jobs, sum of results 2470', out)
        self.assertIn("'processed 20 steps'", out)
        self.assertIn("'worked at attempt 2'", out)
        self.assertIn("55 -> callback: 'the total is 55'", out)
        self.assertIn("'hello from the future'", out)
        self.assertIn('Failures: 1', out)
        self.assertIn('builtins.ValueError: the answer is not 41', out)
        self.assertIn('in doomed: raise ValueError', out)
        self.assertIn('jobs/s', out)
        self.assertTrue(os.path.exists(
            os.path.join(self.dir, 'var', 'Data.fs')))
        # the database stays usable: a second run works too
        again = self.run_zasync('demo')
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)

    def test_usage(self):
        done = self.run_zasync()
        self.assertEqual(done.returncode, 2)
        self.assertIn('demo', done.stderr)
