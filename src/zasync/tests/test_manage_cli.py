"""``zasync fail``, ``remove`` and ``requeue`` on a FileStorage: one line
of output, one line of error and a non-zero exit status."""
import contextlib
import io
import operator
import os
import shutil
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage

from zasync import cli
from zasync import interfaces
from zasync.job import Job
from zasync.testing.processes import run_main
from zasync.queue import install_queues


class ManageCommandTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='zasync-test-manage-')
        self.path = os.path.join(self.dir, 'Data.fs')
        self.uri = 'file://' + self.path
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path))
        install_queues(db)
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        queue = conn.root()[interfaces.KEY]['']
        self.pending = queue.put(Job(operator.add, 1, 2))
        self.other = queue.put(Job(operator.add, 3, 4))
        tm.commit()
        self.pending_id = str(int.from_bytes(self.pending._p_oid, 'big'))
        self.other_id = str(int.from_bytes(self.other._p_oid, 'big'))
        conn.close()
        db.close()

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def zasync(self, *args):
        return run_main(*args)

    def queue_state(self):
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path, read_only=True))
        try:
            conn = db.open()
            queue = conn.root()[interfaces.KEY]['']
            return [repr(job.callable) for job in queue]
        finally:
            db.close()

    def test_fail_a_pending_job(self):
        status, out, err = self.zasync('fail', '--zodb', self.uri,
                                       self.pending_id, '--reason', 'no')
        self.assertEqual((status, err), (0, ''))
        self.assertRegex(out, r"^job %s: out of queue ''; job \d+ fails it "
                         r"with AbortedError\('no'\)\n$" % self.pending_id)
        # The job failing it is first in line; the other job stays.
        first, second = self.queue_state()
        self.assertIn('Job.fail', first)
        self.assertIn('add', second)

    def test_remove_a_pending_job(self):
        status, out, err = self.zasync('remove', '--zodb', self.uri,
                                       self.pending_id)
        self.assertEqual((status, out, err), (
            0, "job %s: removed from queue ''\n" % self.pending_id, ''))
        self.assertEqual(len(self.queue_state()), 1)

    def test_errors_are_one_line(self):
        for args, message in [
                (('remove', '--zodb', self.uri, 'x'),
                 "job ids are whole numbers, not 'x'"),
                (('remove', '--zodb', self.uri, '999999'),
                 'no job with id 999999'),
                (('requeue', '--zodb', self.uri, self.pending_id),
                 'is pending, not held: nothing to requeue'),
                (('remove', '--zodb', 'file://' + self.path + '.missing',
                  '1'), 'no database at'),
        ]:
            status, out, err = self.zasync(*args)
            self.assertEqual(status, 1, (args, out, err))
            self.assertEqual(out, '')
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn(message, err)
        self.assertEqual(len(self.queue_state()), 2)   # nothing changed

    def test_fail_needs_a_reason_and_every_command_a_database(self):
        for args in (['fail', '--zodb', self.uri, self.pending_id],
                     ['remove', self.pending_id]):
            with contextlib.redirect_stderr(io.StringIO()):
                with self.assertRaises(SystemExit) as caught:
                    cli.main(args)
            self.assertEqual(caught.exception.code, 2)
