"""``zasync worker`` and the inspection commands, as real processes on a
real ZEO server (and in-process on a FileStorage for the inspection
commands' details)."""
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import unittest

import transaction
import ZODB
import ZODB.FileStorage

from zasync import interfaces
from zasync.job import Job
from zasync.testing.processes import run_command
from zasync.testing.processes import run_main
from zasync.testing.processes import WorkersTestCase
from zasync.testing.processes import new_connection
from zasync.testing.processes import wait_for_worker
from zasync.testing.processes import wait_until
from zasync.tests import jobs

FAST = ['--poll-interval', '0.1', '--ping-interval', '0.2',
        '--death-interval', '1']


def zasync(*args, timeout=60):
    """Run ``python -m zasync ARGS``; return (status, stdout, stderr)."""
    result = run_command(*args, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


class WorkerTestCase(WorkersTestCase):

    def worker(self, name='w', options=FAST):
        return super().worker(name, options)

    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def put(self, *args, **kw):
        job = self.queue().put(Job(*args), **kw)
        self.tm.commit()
        return job

    def wait_for_status(self, job, status):
        wait_until(self.conn, lambda: job.status == status, 30,
                   lambda: '%r never reached %s (it is %s)' % (
                       job, status, job.status))


class WakeUpTests(WorkerTestCase):

    def test_commits_of_other_processes_wake_the_worker(self):
        # With an hour between polls, only wake-ups can start these jobs,
        # and a lost one times out.  (A ZEO client learns of a commit just
        # before a new transaction can see it; the dispatcher waits for
        # that before claiming.  It did not, and lost about 1 in 100.)
        worker = self.worker(options=[
            '--poll-interval', '3600', '--ping-interval', '1',
            '--death-interval', '600']).start()
        wait_for_worker(self.conn, worker)
        for i in range(200):
            job = self.put(jobs.add, i, 1)
            wait_until(self.conn,
                       lambda: job.status == interfaces.COMPLETED, 10,
                       lambda: 'job %d was not started by a wake-up' % i)
        self.assertEqual(job.result, 200)
        worker.stop()


class WorkerProcessTests(WorkerTestCase):

    def test_sigint_stops_cleanly(self):
        worker = self.worker().start()
        record = wait_for_worker(self.conn, worker)
        job = self.put(jobs.add, 1, 2)
        self.wait_for_status(job, interfaces.COMPLETED)
        worker.signal(signal.SIGINT)
        self.assertEqual(worker.wait(), 0)
        self.tm.begin()
        self.assertIsNone(record.activated)
        self.assertIn('SIGINT: claiming no more jobs', worker.log())
        self.assertIn('worker %s stopped' % worker.uuid, worker.log())

    def test_a_second_signal_ends_the_grace_period(self):
        worker = self.worker(options=FAST + ['--grace', '600']).start()
        wait_for_worker(self.conn, worker)
        job = self.put(jobs.wait_for_gate, 'never')
        self.wait_for_status(job, interfaces.ACTIVE)
        worker.terminate()
        worker.wait_for_log('1 running job(s) get 600.0 s to finish')
        worker.terminate()
        self.assertEqual(worker.wait(), 0)
        self.assertIn('SIGTERM again: not waiting', worker.log())
        self.tm.begin()
        # Interrupted: its wrapper waits in the queue.
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertEqual(list(self.queue()), [job.parent])

    def test_agents_and_intervals_follow_the_command_line(self):
        worker = self.worker(options=FAST[:2] + [
            '--agent', 'fast:1', '--agent', 'slow:2',
            '--ping-interval', '0.5', '--death-interval', '3']).start()
        record = wait_for_worker(self.conn, worker)
        self.assertEqual(sorted((name, agent.size)
                                for name, agent in record.items()),
                         [('fast', 1), ('slow', 2)])
        self.assertEqual(record.ping_interval.total_seconds(), 0.5)
        self.assertEqual(record.ping_death_interval.total_seconds(), 3)
        worker.terminate()
        self.assertEqual(worker.wait(), 0)
        worker.options = FAST + ['--agent', 'fast:4']
        worker.start()
        wait_until(self.conn, lambda: record.activated and
                   sorted(record) == ['fast'] and record['fast'].size == 4)
        self.assertEqual(record.ping_death_interval.total_seconds(), 1)

    def test_zope_conf(self):
        with open(os.path.join(self.directory, 'site.zcml'), 'w') as f:
            f.write('<configure xmlns="http://namespaces.zope.org/zope">\n'
                    '  <include package="zope.component" file="meta.zcml"/>'
                    '\n</configure>\n')
        conf = os.path.join(self.directory, 'zope.conf')
        with open(conf, 'w') as f:
            f.write('site-definition site.zcml\n'
                    '<eventlog>\n  <logfile>\n    path STDERR\n'
                    '  </logfile>\n</eventlog>\n'
                    '<zodb>\n  <zeoclient>\n    server %s:%s\n'
                    '  </zeoclient>\n</zodb>\n' % self.server.address)
        worker = self.worker()
        worker.argv = lambda: [
            sys.executable, '-m', 'zasync', 'worker', '--zope-conf',
            conf, '--uuid-file', worker.uuid_file] + FAST
        worker.start()
        wait_for_worker(self.conn, worker)
        job = self.put(jobs.add, 40, 2)
        self.wait_for_status(job, interfaces.COMPLETED)
        self.assertEqual(job.result, 42)
        worker.terminate()
        self.assertEqual(worker.wait(), 0)

    def test_command_line_errors(self):
        status, out, err = zasync('worker')
        self.assertEqual(status, 1)
        self.assertEqual(err.strip().splitlines()[-1],
                         'zasync worker: error: give the database: --zodb '
                         'URI or --zope-conf FILE')
        status, out, err = zasync('worker', '--zodb', self.server.uri,
                                  '--agent', 'main:many')
        self.assertEqual(status, 2)
        self.assertIn("the size must be a whole number", err)
        status, out, err = zasync('worker', '--zodb', 'nosuch://x')
        self.assertEqual(status, 1)
        self.assertIn("unknown database URI scheme 'nosuch'", err)


class ZEOReconnectionTests(WorkerTestCase):

    def test_prefetched_oids_are_dropped_on_reconnection(self):
        import persistent.mapping
        from zasync.worker import forget_prefetched_oids_on_reconnect
        guarded, plain = self.server.db(), self.server.db()
        try:
            self.assertTrue(
                forget_prefetched_oids_on_reconnect(guarded.storage))
            for db in (guarded, plain):
                conn = new_connection(db)
                conn.transaction_manager.begin()   # see the other's commit
                conn.root()[str(id(db))] = (
                    persistent.mapping.PersistentMapping())
                conn.transaction_manager.commit()
                conn.close()
                self.assertTrue(db.storage._oids)   # fetched in advance
            self.server.stop()
            self.server.start()
            wait_until(self.conn, lambda: guarded.storage.is_connected()
                       and plain.storage.is_connected())
            self.assertEqual(guarded.storage._oids, [])
            # Without: oids the restarted server will hand out again.
            self.assertTrue(plain.storage._oids)
        finally:
            guarded.close()
            plain.close()
        self.assertFalse(forget_prefetched_oids_on_reconnect(object()))


class InspectionOnZEOTests(WorkerTestCase):

    def test_status_jobs_job_stats(self):
        worker = self.worker().start()
        wait_for_worker(self.conn, worker)
        ok = self.put(jobs.add, 1, 2)
        bad = self.put(jobs.fail, 'boom')
        self.wait_for_status(ok, interfaces.COMPLETED)
        self.wait_for_status(bad, interfaces.COMPLETED)
        later = self.put(jobs.add, 3, 4, begin_after=None)
        uri = self.server.uri

        status, out, err = zasync('status', '--zodb', uri, '--json')
        self.assertEqual(status, 0, err)
        info = json.loads(out)
        [queue] = info['queues']
        [record] = queue['dispatchers']
        self.assertEqual((record['uuid'], record['state']),
                         (str(worker.uuid), 'alive'))
        self.assertEqual(record['agents'][0]['name'], 'main')
        self.assertEqual(record['death_interval'], 1.0)

        status, out, err = zasync('status', '--zodb', uri)
        self.assertEqual(status, 0, err)
        self.assertIn(str(worker.uuid), out)
        self.assertIn('alive', out)

        status, out, err = zasync('jobs', '--zodb', uri, '--state',
                                  'failed', '--json')
        self.assertEqual(status, 0, err)
        self.assertEqual([row['id'] for row in json.loads(out)],
                         [int.from_bytes(bad._p_oid, 'big')])

        status, out, err = zasync('jobs', '--zodb', uri, '--callable',
                                  'zasync.tests.jobs.ad*')
        self.assertEqual(status, 0, err)
        self.assertIn('zasync.tests.jobs.add(1, 2)', out)
        self.assertNotIn('fail', out)

        bad_id = str(int.from_bytes(bad._p_oid, 'big'))
        status, out, err = zasync('job', '--zodb', uri, bad_id)
        self.assertEqual(status, 0, err)
        self.assertIn('completed (failed)', out)
        self.assertIn('ValueError: boom', out)
        self.assertIn('Traceback', out)

        status, out, err = zasync('stats', '--zodb', uri, '--json')
        self.assertEqual(status, 0, err)
        info = json.loads(out)
        self.assertGreaterEqual(info['jobs']['completed'], 2)
        self.assertEqual(info['jobs']['failed'], 1)
        self.assertEqual(info['dispatchers']['alive'], 1)
        self.wait_for_status(later, interfaces.COMPLETED)

        status, out, err = zasync('job', '--zodb', uri, '999999')
        self.assertEqual((status, out), (1, ''))
        self.assertEqual(err, 'zasync job: error: no job with id 999999\n')


class InspectionTests(unittest.TestCase):
    """The inspection commands in-process, on a FileStorage."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zasync-test-inspect-')
        self.path = os.path.join(self.directory, 'Data.fs')
        self.uri = 'file://' + self.path

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def run_cli(self, *args):
        return run_main(*args)

    def make_database(self):
        from zasync.queue import Queue, Queues
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path))
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        queues = conn.root()[interfaces.KEY] = Queues()
        queue = queues[''] = Queue()
        job = queue.put(Job(jobs.add, 1, 2))
        tm.commit()
        job_id = int.from_bytes(job._p_oid, 'big')
        conn.close()
        db.close()
        return job_id

    def test_errors_are_one_line(self):
        status, out, err = self.run_cli('status', '--zodb', self.uri)
        self.assertEqual(status, 1)
        self.assertEqual(err, 'zasync status: error: no database at %s\n'
                         % self.path)
        db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path))
        db.close()
        status, out, err = self.run_cli('jobs', '--zodb', self.uri)
        self.assertEqual(status, 1)
        self.assertIn('no zasync queues in this database', err)
        self.make_database()
        status, out, err = self.run_cli('job', '--zodb', self.uri, 'x1')
        self.assertEqual((status, err), (1, "zasync job: error: job ids are "
                                            "whole numbers, not 'x1'\n"))
        status, out, err = self.run_cli('job', '--zodb', self.uri, '0')
        self.assertEqual(status, 1)
        self.assertIn('object 0 is not a job', err)
        status, out, err = self.run_cli('jobs', '--zodb', self.uri,
                                        '--state', 'lost')
        self.assertEqual(status, 1)
        self.assertIn('unknown state lost', err)

    def test_library_log_records_do_not_add_lines(self):
        # RelStorage logs its connection failure before raising it.
        status, out, err = zasync(
            'jobs', '--zodb', 'postgres://nobody@127.0.0.1:1/none')
        self.assertEqual(status, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith(
            'zasync jobs: error: cannot open postgres://'), err)

    def test_pending_job(self):
        job_id = self.make_database()
        status, out, err = self.run_cli('jobs', '--zodb', self.uri)
        self.assertEqual(status, 0, err)
        self.assertEqual(out.splitlines()[1].split()[:4],
                         [str(job_id), 'pending', 'pending',
                          'zasync.tests.jobs.add(1,'])
        status, out, err = self.run_cli('jobs', '--zodb', self.uri,
                                        '--state', 'completed')
        self.assertEqual(out, 'no jobs\n')
        status, out, err = self.run_cli('job', '--zodb', self.uri,
                                        str(job_id), '--json')
        info = json.loads(out)
        self.assertEqual((info['status'], info['where'], info['args']),
                         ('pending', 'pending', ['1', '2']))
        status, out, err = self.run_cli('stats', '--zodb', self.uri)
        self.assertEqual(status, 0, err)
        self.assertIn('pending    1', out)
        status, out, err = self.run_cli('status', '--zodb', self.uri)
        self.assertEqual(out, "queue '': 1 pending\n"
                              "no dispatcher has served this queue yet\n")


class FakeTTY(io.StringIO):

    def isatty(self):
        return True


class ProgressBarTests(unittest.TestCase):

    def test_only_on_a_terminal(self):
        from zasync.cli.output import Bar
        stream = io.StringIO()
        bar = Bar(stream)
        bar.show(1, 2, 'half')
        bar.end()
        self.assertEqual(stream.getvalue(), '')
        stream = FakeTTY()
        bar = Bar(stream, width=4)
        bar.show(1, 2, 'half')
        bar.show(1, 2, 'half')   # unchanged: not drawn again
        bar.show(7, 2, 'more than done')
        bar.end()
        self.assertEqual(stream.getvalue().split('\r'), [
            '', '[##..] half'.ljust(79),
            '', '[####] more than done'.ljust(79), '\n'])


class GracefulStopTests(unittest.TestCase):
    """The worker's graceful stop, in-process with the test reactor."""

    def setUp(self):
        import uuid
        import zope.component.testing
        from ZODB.MappingStorage import MappingStorage
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        self.db = ZODB.DB(MappingStorage())
        self.addCleanup(self.db.close)
        self.uuid = uuid.uuid1()

    def test_claimed_jobs_that_did_not_start_are_forgotten(self):
        from zasync import dispatcher as dispatcher_module
        from zasync.pool import CLAIM
        from zasync.testing import Reactor
        from zasync.worker import WorkerDispatcher
        dispatcher = WorkerDispatcher(self.db, Reactor(), uuid=self.uuid)
        self.addCleanup(dispatcher_module.pop, self.uuid)
        from zasync.pool import AgentThreadPool
        pool = AgentThreadPool(dispatcher, '', 'main')   # no threads
        dispatcher.queues[''] = {'main': pool}
        pool.put((1, 'unnamed', {}))
        pool.put((2, 'unnamed', {}))
        pool.queue.put(CLAIM)
        self.assertEqual(pool.outstanding, 2)
        self.assertEqual(dispatcher.drain(), 2)
        self.assertTrue(dispatcher.draining)
        self.assertEqual(pool.outstanding, 0)
        self.assertEqual(dispatcher.outstanding(), 0)
        self.assertIs(pool.queue.get_nowait(), CLAIM)   # kept
        self.assertTrue(pool.queue.empty())
        # Draining, it claims nothing.
        self.assertEqual(dispatcher.claimJobs(None, '', 'main', pool), [])

    def test_signal_handlers_are_restored_unless_replaced(self):
        from zasync.testing import Reactor
        from zasync.worker import Worker

        def foreign(signum, frame):
            pass

        test = self

        class RunningReactor(Reactor):
            def run(self, installSignalHandlers=True):
                test.assertEqual(signal.getsignal(signal.SIGINT),
                                 worker._signalled)
                signal.signal(signal.SIGTERM, foreign)   # someone else
                self.start()
                self.stop()

        before = {signum: signal.getsignal(signum)
                  for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum, handler in before.items():
            self.addCleanup(signal.signal, signum, handler)
        worker = Worker(self.db, self.uuid, reactor=RunningReactor())
        self.assertEqual(worker.run(), 0)
        for pool in worker.dispatcher.dead_pools:
            self.assertEqual(pool.join(5), [])
        self.assertIs(signal.getsignal(signal.SIGINT), before[signal.SIGINT])
        self.assertIs(signal.getsignal(signal.SIGTERM), foreign)
