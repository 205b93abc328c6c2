"""Soak test: two worker processes on ZEO, one enqueueing process, 1,000
jobs, and one worker SIGKILLed midway and restarted with the same UUID.

Afterwards every job is COMPLETED with its own id as result, every job's
id is recorded (by the job itself, in the same transaction as its result),
and any number recorded twice belongs to a job that the killed worker was
running -- the test reports such doubles instead of hiding them.
"""
import collections
import subprocess
import sys

from zasync import interfaces
from zasync.failure import Failure
from zasync.testing.processes import WorkerProcess
from zasync.testing.processes import WorkersTestCase
from zasync.testing.processes import wait_for_worker
from zasync.testing.processes import wait_until
from zasync.testing.servers import subprocess_env
from zasync.tests import jobs
from zasync.tests.enqueue import ENQUEUED

COUNT = 1000
KILL_AFTER = 300
OPTIONS = ['--poll-interval', '0.1', '--ping-interval', '0.2',
           '--death-interval', '1', '--agent', 'main:3']

#: the figures of the last run, for whoever wants to report them
report = {}


class SoakTest(WorkersTestCase):

    def setUp(self):
        super().setUp()
        self.enqueuer = None

    def tearDown(self):
        if self.enqueuer is not None and self.enqueuer.poll() is None:
            self.enqueuer.kill()
            self.enqueuer.wait(30)
        super().tearDown()   # (WorkersLayer stops the worker processes.)

    def done(self):
        tree = self.conn.root()[jobs.RECORDS]
        return sum(1 for entry in tree.values() if entry)

    def test_nothing_lost(self):
        root = self.conn.root()
        jobs.prepare_records(root, range(COUNT))
        self.tm.commit()
        a = WorkerProcess(self.server.uri, 'a', self.directory,
                          OPTIONS).start()
        b = WorkerProcess(self.server.uri, 'b', self.directory,
                          OPTIONS).start()
        wait_for_worker(self.conn, a)
        wait_for_worker(self.conn, b)

        log = open('%s/enqueue.log' % self.directory, 'wb')
        with log:
            self.enqueuer = subprocess.Popen(
                [sys.executable, '-m', 'zasync.tests.enqueue',
                 self.server.uri, str(COUNT), '--batch', '50',
                 '--pause', '0.01'],
                stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())

        wait_until(self.conn, lambda: self.done() >= KILL_AFTER, 60,
                   lambda: 'only %d jobs done' % self.done())
        # The jobs in a's agent right now (some may finish before the kill).
        self.tm.begin()
        queue = root[interfaces.KEY]['']
        agent = queue.dispatchers[a.uuid]['main']
        in_killed_agent = {jobs_id(job) for job in agent}
        killed_pid = a.pid
        self.assertEqual(a.kill(), -9)
        done_at_kill = self.done()
        a.start()

        self.assertEqual(self.enqueuer.wait(60), 0)

        def all_completed():
            if self.done() < COUNT:
                return False
            enqueued = root[ENQUEUED]
            return all(job.status == interfaces.COMPLETED
                       for job in enqueued.values())
        wait_until(self.conn, all_completed, 90,
                   lambda: '%d of %d jobs done' % (self.done(), COUNT))

        self.tm.begin()
        enqueued = root[ENQUEUED]
        records = root[jobs.RECORDS]
        self.assertEqual(len(enqueued), COUNT)
        failures = {number: job.result for number, job in enqueued.items()
                    if isinstance(job.result, Failure)}
        self.assertEqual(failures, {})
        missing = []
        doubles = {}
        pids = collections.Counter()
        for number, job in enqueued.items():
            own_id = jobs_id(job)
            self.assertEqual(job.result, own_id)
            entries = records[number]
            if own_id not in [job_id for job_id, pid in entries]:
                missing.append(number)
            if len(entries) > 1:
                doubles[number] = entries
            pids.update(pid for job_id, pid in entries)
        self.assertEqual(missing, [])
        # A job can only have been recorded twice if the killed worker was
        # running it: its first commit cannot have succeeded otherwise.
        unexplained = {number: entries for number, entries in doubles.items()
                       if killed_pid not in [p for j, p in entries]
                       or jobs_id(enqueued[number]) not in in_killed_agent}
        self.assertEqual(unexplained, {})
        interrupted = sum(
            1 for job in enqueued.values()
            if job._retry_policy is not None
            and job._retry_policy.data.get('interruptions'))
        report.clear()
        report.update({
            'jobs': COUNT, 'completed': COUNT - len(failures),
            'done at kill': done_at_kill,
            'in the killed agent': len(in_killed_agent),
            'interrupted and retried': interrupted,
            'recorded twice': len(doubles),
            'by the killed worker': pids[killed_pid],
            'by the restarted worker': pids[a.pid],
            'by the other worker': pids[b.pid]})
        # Every worker still stops cleanly.
        a.terminate()
        b.terminate()
        self.assertEqual((a.wait(), b.wait()), (0, 0))
        print('\n  soak: ' + ', '.join('%s %s' % item
                                       for item in report.items()))


def jobs_id(job):
    return int.from_bytes(job._p_oid, 'big')
