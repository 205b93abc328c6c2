"""Bounded, crash-proof inspection: ``zasync jobs``, ``stats``, ``status``
and ``job ID`` in-process on a FileStorage (``zasync.inspection``,
``zasync.cli.inspect``), and the bounds of ``zasync.failure.Failure``.

What they cost is measured by ``benchmarks/bench_inspection.py``; these
tests check what they show.
"""
import contextlib
import datetime
import importlib
import io
import json
import operator
import os
import shutil
import sys
import tempfile
import types
import unittest

import transaction
import ZODB
import ZODB.FileStorage

from zasync import inspection
from zasync import interfaces
from zasync import utils
from zasync.agent import Agent
from zasync.failure import Failure
from zasync.job import Job
from zasync.queue import Queue
from zasync.queue import Queues
from zasync.tests import jobs


def oid_of(job):
    return int.from_bytes(job._p_oid, 'big')


def complete(job, result, agent):
    """Store ``job`` as completed by ``agent`` (as a dispatcher would)."""
    from zasync.job import _COMPLETED
    job._status_id = _COMPLETED
    job._result = result
    job.active_end = utils.now()
    job.active_start = job.active_end - datetime.timedelta(seconds=0.5)
    agent.completed.add(job)
    return job


class InspectionTestCase(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zasync-test-inspection-')
        self.path = os.path.join(self.directory, 'Data.fs')
        self.uri = 'file://' + self.path
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(self.path))
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        self.root = self.conn.root()
        queues = self.root[interfaces.KEY] = Queues()
        self.queue = queues[''] = Queue()
        self.record = self.queue.dispatchers.register(
            __import__('uuid').uuid4())
        self.agent = self.record['main'] = Agent()
        self.record.activate()
        self.tm.commit()

    def tearDown(self):
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def close(self):
        if self.db is not None:
            self.tm.abort()
            self.conn.close()
            self.db.close()
            self.db = None

    def run_cli(self, *args):
        """Close our database (the command opens it read-only) and run
        ``zasync ARGS`` in-process."""
        from zasync import cli
        self.tm.commit()
        self.close()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(list(args) + ['--zodb', self.uri])
            except SystemExit as e:   # argparse's usage errors
                status = e.code
        return status, out.getvalue(), err.getvalue()

    def json_cli(self, *args):
        status, out, err = self.run_cli(*args, '--json')
        self.assertEqual(status, 0, err)
        return json.loads(out)

    def hold(self, job):
        """Make ``job`` claimed by our agent."""
        claimed = self.queue.claim(lambda candidate: candidate is job)
        self.assertIs(claimed, job)
        job.parent = self.agent
        self.agent._append(job)
        return job


class ListingTests(InspectionTestCase):

    def fill(self, completed=30):
        self.pending = [self.queue.put(Job(operator.mul, i, 2))
                        for i in range(3)]
        self.completed = []
        for i in range(completed):
            job = Job(operator.add, i, 1)
            self.conn.add(job)
            result = (Failure(ValueError('no %d' % i)) if i % 3 == 0
                      else i + 1)
            self.completed.append(complete(job, result, self.agent))
            if i == completed // 2:
                self.agent.completed.archive()   # some archived, some not
        self.tm.commit()

    def test_limit_order_and_the_rest(self):
        self.fill()
        rows = self.json_cli('jobs', '--limit', '5')
        self.assertEqual([row['id'] for row in rows],
                         [oid_of(job) for job in self.pending]
                         + [oid_of(self.completed[-1]),
                            oid_of(self.completed[-2])])
        self.assertEqual([row['where'] for row in rows],
                         ['pending'] * 3 + ['completed'] * 2)
        self.assertIsNone(rows[0]['problem'])
        status, out, err = self.run_cli('jobs', '--limit', '5')
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 7)
        self.assertEqual(lines[-1], '(28 more; use --limit)')
        # every job, newest completed first, each once
        rows = self.json_cli('jobs', '--limit', '0')
        self.assertEqual([row['id'] for row in rows],
                         [oid_of(job) for job in self.pending]
                         + [oid_of(job) for job in reversed(self.completed)])
        status, out, err = self.run_cli('jobs', '--state', 'failed',
                                        '--limit', '2')
        self.assertEqual(out.splitlines()[-1], '(8 more; use --limit)')

    def test_the_rest_beyond_the_budget(self):
        self.fill(completed=12)
        self.tm.commit()
        candidates = inspection.iter_jobs(self.root)
        shown = [next(candidates) for i in range(4)]
        self.assertEqual(len(shown), 4)
        # 11 jobs are left: with a budget of 5, "about" (the lengths)
        self.assertEqual(inspection.count_more(candidates, self.root,
                                               shown=4, budget=5),
                         (11, False))
        # (pending 3, then completed 11, 10, 9, 8, 7, 6; 9 and 6 failed)
        candidates = inspection.iter_jobs(self.root)
        self.assertEqual(inspection.count_more(candidates, self.root,
                                               {'failed'}, budget=9),
                         (2, False))
        candidates = inspection.iter_jobs(self.root)
        self.assertEqual(inspection.count_more(candidates, self.root,
                                               {'failed'}, budget=100),
                         (4, True))

    def test_negative_limit_is_refused(self):
        status, out, err = self.run_cli('jobs', '--limit', '-1')
        self.assertEqual(status, 2)
        self.assertEqual(err.splitlines()[-1],
                         "zasync jobs: error: argument --limit: '-1': give a "
                         "whole number of jobs, 0 or more (0: all)")
        self.assertEqual(out, '')

    def test_stats_counts_and_window(self):
        self.fill(completed=30)
        late = self.queue.put(Job(operator.mul, 9, 9),
                              begin_after=utils.now()
                              + datetime.timedelta(hours=1))
        self.hold(self.pending[0])
        self.tm.commit()
        now = utils.now()
        info = inspection.stats_info(self.root, now)
        self.assertEqual(
            {k: v for k, v in info['jobs'].items() if v},
            {'pending': 3, 'assigned': 1, 'completed': 30, 'succeeded': 20,
             'failed': 10})
        self.assertEqual(info['queues'][''],
                         {'new': 0, 'pending': 3, 'assigned': 1,
                          'active': 0, 'callbacks': 0, 'completed': 30})
        self.assertEqual(info['durations']['count'], 30)
        self.assertEqual(info['durations']['median'], 0.5)
        self.assertEqual(info['completed_last_hour'], 30)
        self.assertEqual(info['window']['read'], 30)
        self.assertTrue(info['window']['all'])
        self.assertIsNone(info['job_container'])
        # a window of the newest 5: outcomes of those only
        info = inspection.stats_info(self.root, now, window=5)
        self.assertEqual(info['jobs']['completed'], 30)
        self.assertEqual((info['jobs']['succeeded'], info['jobs']['failed']),
                         (4, 1))   # 29 to 25; 27 failed
        self.assertEqual(info['window']['read'], 5)
        self.assertFalse(info['window']['all'])
        self.assertEqual(info['window']['since'],
                         inspection.when(self.completed[-5].active_end))
        status_info = inspection.status_info(self.root, now)
        self.assertEqual((status_info[0]['pending'],
                          status_info[0]['due_later']), (3, 1))
        self.assertEqual(status_info[0]['dispatchers'][0]['agents'][0],
                         {'name': 'main', 'size': 3,
                          'jobs': [oid_of(self.pending[0])],
                          'completed': 30, 'problem': None})
        self.assertIsNotNone(late)
        status, out, err = self.run_cli('stats')
        self.assertEqual(status, 0, err)
        self.assertIn('completed  30', out)
        self.assertIn('durations of 30 completed job(s): median 0.50 s', out)
        self.assertNotIn('newest', out)

    def test_due_later_matches_the_jobs(self):
        now = utils.now()
        for seconds in (-5, 0, 0.5, 3, 3600, 86400 * 3):
            self.queue.put(Job(operator.mul, 1, 1),
                           begin_after=now + datetime.timedelta(
                               seconds=seconds))
        self.tm.commit()
        for when in (now, now + datetime.timedelta(seconds=1),
                     now + datetime.timedelta(hours=2)):
            expected = sum(1 for job in self.queue if job.begin_after > when)
            self.assertEqual(inspection._due_later(self.queue, when),
                             expected)

    def test_job_locations(self):
        from zasync.job import _ACTIVE
        from zasync.manager import JobContainer
        self.fill(completed=3)
        held = self.hold(self.pending[1])
        inner = Job(operator.add, 5, 5)
        self.conn.add(inner)
        inner._status_id = _ACTIVE
        wrapper = self.queue.put(Job(inner.handleInterrupt))
        self.assertIs(inner.parent, wrapper)
        callback = self.completed[0].addCallback(Job(jobs.add, 1))
        container = self.root[interfaces.JOBS_KEY] = JobContainer()
        loose = Job(operator.neg, 1)
        self.conn.add(loose)
        container[str(oid_of(loose))] = loose
        self.tm.commit()
        expected = {
            self.pending[0]: ('pending', None),
            held: ('claimed', 'main'),
            self.completed[1]: ('completed', 'main'),
            wrapper: ('pending', None),
            inner: ('interrupted', None),
            callback: ('callback or inner job', None),
            loose: ('job container', None),
        }
        found = {found.job: found for found in inspection.iter_jobs(
            self.root)}
        for job, (where, agent) in expected.items():
            info = inspection.job_details(job, self.root)
            self.assertEqual((info['where'], info['agent']), (where, agent),
                             job)
            if job is not callback:   # (a callback is not listed)
                self.assertEqual(found[job].where, where)
            self.assertEqual(info['queue'],
                             None if job is loose else '', job)


class ReprTests(InspectionTestCase):

    def test_job_reprs_are_cut_unless_full(self):
        big = 'x' * 10000
        job = self.queue.put(Job(jobs.add, big, [1] * 5000, key=big))
        done = Job(operator.add, 1, 2)
        self.conn.add(done)
        complete(done, big, self.agent)
        self.tm.commit()
        job_id, done_id = str(oid_of(job)), str(oid_of(done))
        limit = inspection.REPR_LIMIT
        info = self.json_cli('job', job_id)
        arg = info['args'][0]
        self.assertEqual(arg, repr(big)[:limit] + '...[10002 characters in '
                                                  'all]')
        self.assertEqual(info['kwargs']['key'], arg)
        self.assertEqual(info['call'], repr(job).split('``')[1][:limit]
                         + '...[%d characters in all]'
                         % len(repr(job).split('``')[1]))
        status, out, err = self.run_cli('job', job_id)
        self.assertIn("call:         zasync.tests.jobs.add('xxx", out)
        self.assertIn('characters in all]', out)
        self.assertLess(len(out), 2000)
        info = self.json_cli('job', job_id, '--full')
        self.assertEqual(info['args'], [repr(big), repr([1] * 5000)])
        self.assertEqual(info['call'], repr(job).split('``')[1])
        info = self.json_cli('job', done_id)
        self.assertEqual(info['result'], arg)
        info = self.json_cli('job', done_id, '--full')
        self.assertEqual(info['result'], repr(big))
        # the listing's call and result are short
        rows = self.json_cli('jobs')
        self.assertTrue(all(len(row['call']) <= limit for row in rows))
        self.assertEqual([len(row['result']) for row in rows], [0, 40])


# --------------------------------------------------------------------------
# Jobs that cannot be loaded


GONE = '''
import persistent
from zasync.job import Job

def work(value):
    return value

class Argument:
    def __init__(self, value):
        self.value = value

class MyJob(Job):
    pass
'''


GONE_ERROR = "ModuleNotFoundError: No module named 'zasync_test_gone_module'"


class BrokenJobTests(InspectionTestCase):

    def setUp(self):
        super().setUp()
        self.modules = []
        self.addCleanup(self.forget_modules)

    def forget_modules(self):
        for name in self.modules:
            sys.modules.pop(name, None)
        if self.directory in sys.path:
            sys.path.remove(self.directory)
        importlib.invalidate_caches()

    def module(self, name, source=GONE):
        """A module ``name`` that exists for now (``sys.modules`` only)."""
        module = types.ModuleType(name)
        exec(source, module.__dict__)
        sys.modules[name] = module
        self.modules.append(name)
        return module

    def test_every_command_shows_broken_jobs(self):
        gone = self.module('zasync_test_gone_module')
        by_function = self.queue.put(Job(gone.work, 1))
        by_argument = self.queue.put(Job(jobs.add, gone.Argument(2), 3))
        by_class = self.queue.put(gone.MyJob(jobs.add, 4, 5))
        held = self.hold(self.queue.put(gone.MyJob(jobs.add, 6, 7)))
        done = gone.MyJob(jobs.add, 8, 9)
        self.conn.add(done)
        complete(done, 17, self.agent)
        fine = self.queue.put(Job(jobs.add, 1, 1))
        self.tm.commit()
        ids = [oid_of(job) for job in
               (by_function, by_argument, by_class, held, done, fine)]
        self.close()
        sys.modules.pop('zasync_test_gone_module')

        rows = {row['id']: row for row in self.json_cli('jobs')}
        self.assertEqual(
            [(rows[i]['where'], rows[i]['status'], rows[i]['problem'])
             for i in ids],
            [('pending', 'pending', 'its callable zasync_test_gone_module.'
              'work cannot be imported: ' + GONE_ERROR),
             ('pending', 'pending', 'an argument of class '
              'zasync_test_gone_module.Argument cannot be imported: '
              + GONE_ERROR),
             ('pending', 'pending', 'its class zasync_test_gone_module.MyJob '
              'cannot be imported: ' + GONE_ERROR),
             ('claimed', 'assigned', 'its class zasync_test_gone_module.MyJob '
              'cannot be imported: ' + GONE_ERROR),
             ('completed', 'completed', 'its class '
              'zasync_test_gone_module.MyJob cannot be imported: '
              + GONE_ERROR),
             ('pending', 'pending', None)])
        self.assertEqual(rows[ids[2]]['call'], 'zasync.tests.jobs.add(4, 5)')
        self.assertEqual(rows[ids[0]]['callable'],
                         'zasync_test_gone_module.work')
        status, out, err = self.run_cli('jobs')
        self.assertEqual(status, 0, err)
        self.assertIn('broken: its class zasync_test_gone_module.MyJob cannot '
                      'be imported', out)
        rows = self.json_cli('jobs', '--state', 'broken')
        self.assertEqual([row['id'] for row in rows], ids[:5])

        for job_id in ids:
            status, out, err = self.run_cli('job', str(job_id))
            self.assertEqual(status, 0, err)
            self.assertEqual(('broken:' in out), job_id != ids[-1], out)
        info = self.json_cli('job', str(ids[4]))
        self.assertEqual((info['status'], info['where'], info['result'],
                          info['args']),
                         ('completed', 'completed', '17', ['8', '9']))

        status, out, err = self.run_cli('status')
        self.assertEqual(status, 0, err)
        self.assertIn("queue '': 4 pending", out)
        info = self.json_cli('stats')
        self.assertEqual((info['jobs']['pending'], info['jobs']['assigned'],
                          info['jobs']['completed'], info['jobs']['broken']),
                         (4, 1, 1, 2))
        status, out, err = self.run_cli('stats')
        self.assertEqual(status, 0, err)
        self.assertIn('broken     2', out)

    def raising_module(self):
        """A module that imports now, and raises once changed."""
        sys.path.insert(0, self.directory)
        self.filename = os.path.join(self.directory, 'zasync_test_raising.py')
        with open(self.filename, 'w') as f:
            f.write(GONE)
        self.modules.append('zasync_test_raising')
        return importlib.import_module('zasync_test_raising')

    def break_module(self):
        self.close()
        sys.modules.pop('zasync_test_raising')
        with open(self.filename, 'w') as f:
            f.write('raise RuntimeError("no such dependency, for the test")')
        importlib.invalidate_caches()
        shutil.rmtree(os.path.join(self.directory, '__pycache__'),
                      ignore_errors=True)

    def test_callable_module_raising_at_import(self):
        module = self.raising_module()
        job = self.queue.put(Job(module.work, 1))
        fine = self.queue.put(Job(jobs.add, 1, 2))
        self.tm.commit()
        job_id = str(oid_of(job))
        self.break_module()
        # (the command's database gives a placeholder for what a failing
        # module should have held: zasync.job.tolerant_class_factory)
        problem = ('its callable zasync_test_raising.work cannot be '
                   'imported: RuntimeError: no such dependency, for the '
                   'test')
        rows = self.json_cli('jobs')
        # (read with a placeholder for the function)
        self.assertEqual([(row['status'], row['problem']) for row in rows],
                         [('pending', problem), ('pending', None)])
        self.assertEqual(rows[0]['call'], 'zasync_test_raising.work(1)')
        self.assertEqual(rows[1]['id'], oid_of(fine))
        status, out, err = self.run_cli('jobs', '--state', 'broken')
        self.assertEqual((status, len(out.splitlines())), (0, 2), err)
        status, out, err = self.run_cli('job', job_id)
        self.assertEqual(status, 0, err)
        self.assertIn('broken:       ' + problem, out)
        self.assertIn('where:        pending', out)
        for command in ('status', 'stats'):
            status, out, err = self.run_cli(command)
            self.assertEqual(status, 0, err)

    def test_job_class_module_raising_at_import(self):
        # The command's database gives a placeholder for the job's class
        # (zasync.job.tolerant_class_factory): the job shows, with why.
        module = self.raising_module()
        job = self.queue.put(module.MyJob(jobs.add, 1, 2))
        done = Job(operator.add, 1, 2)
        self.conn.add(done)
        complete(done, 3, self.agent)
        self.tm.commit()
        job_id = str(oid_of(job))
        self.break_module()
        rows = self.json_cli('jobs')
        problem = ('its class zasync_test_raising.MyJob cannot be imported: '
                   'RuntimeError: no such dependency, for the test')
        self.assertEqual(
            [(row['id'], row['where'], row['problem']) for row in rows],
            [(int(job_id), 'pending', problem),
             (oid_of(done), 'completed', None)])
        status, out, err = self.run_cli('jobs')
        self.assertEqual(status, 0, err)
        status, out, err = self.run_cli('job', job_id)
        self.assertEqual(status, 0, err)
        self.assertIn(problem, out)
        for command in ('status', 'stats'):
            status, out, err = self.run_cli(command)
            self.assertEqual(status, 0, err)

    def test_broken_objects_that_are_not_jobs(self):
        gone = self.module('zasync_test_gone_other', GONE + '''
class Thing(persistent.Persistent):
    pass
''')
        self.root['thing'] = gone.Thing()
        self.tm.commit()
        thing = str(oid_of(self.root['thing']))
        self.close()
        sys.modules.pop('zasync_test_gone_other')
        status, out, err = self.run_cli('job', thing)
        self.assertEqual((status, err),
                         (1, 'zasync job: error: object %s is not a job (it '
                             'is a zasync_test_gone_other.Thing, whose class '
                             'cannot be imported)\n' % thing))


# --------------------------------------------------------------------------
# Failures stay small


BIG = 'y' * (1 << 20)
REFERRED = 42


def fails_with_locals():
    local_text = 'z' * 100000
    local_list = list(range(100000))
    if REFERRED:
        raise ValueError('m' * 50000, local_text)
    return local_list


class FailureBoundsTests(unittest.TestCase):

    def failure(self, function, *args):
        try:
            function(*args)
        except Exception:
            return Failure()
        self.fail('no error')

    def test_locals_and_globals_are_bounded(self):
        from zasync.failure import MAX_ARGS_SIZE
        from zasync.failure import MAX_MESSAGE
        from zasync.failure import MAX_REPR
        failure = self.failure(fails_with_locals)
        frame = failure.frames[-1]
        self.assertEqual(frame.name, 'fails_with_locals')
        self.assertEqual([name for name, text in frame.globals],
                         ['REFERRED'])   # not BIG, not every global
        self.assertEqual(dict(frame.globals)['REFERRED'], '42')
        self.assertEqual([name for name, text in frame.locals],
                         ['local_list', 'local_text'])
        for name, text in frame.locals + frame.globals:
            self.assertLessEqual(len(text), MAX_REPR)
        self.assertTrue(dict(frame.locals)['local_list'].startswith(
            '[0, 1, 2, '))
        self.assertTrue(dict(frame.locals)['local_list'].endswith('...'))
        self.assertLessEqual(len(failure.message), MAX_MESSAGE)
        self.assertLessEqual(len(failure.value_repr), MAX_REPR)
        self.assertTrue(failure.value_repr.startswith("ValueError('mmm"))
        self.assertIsNone(failure.args)   # too big to keep
        self.assertGreater(50000, MAX_ARGS_SIZE)
        self.assertEqual(type(failure.value), Exception)
        self.assertTrue(failure.check(ValueError))
        verbose = failure.getTraceback(detail='verbose')
        self.assertIn('  REFERRED : 42', verbose)
        self.assertLess(len(verbose), 10 * MAX_MESSAGE)

    def test_small_values_are_recorded_as_before(self):
        failure = self.failure(operator.truediv, 1, 0)
        self.assertEqual(failure.args, ('division by zero',))
        self.assertIsInstance(failure.value, ZeroDivisionError)

        def divide(a, b):
            return a / b
        failure = self.failure(divide, {'a': (1,), 'b': {2}}, 0)
        frame = failure.frames[-1]
        self.assertEqual(frame.locals, [('a', "{'a': (1,), 'b': {2}}"),
                                        ('b', '0')])
        self.assertEqual(frame.globals, [])
        self.assertIn('( Globals )\n  (none referred to)',
                      failure.getTraceback(detail='verbose'))

    def test_module_level_code_records_only_what_it_refers_to(self):
        namespace = {'BIG': BIG, 'small': 1, '__name__': 'scratch'}
        code = compile('small + undefined_name', '<scratch>', 'exec')
        try:
            exec(code, namespace)
        except NameError:
            failure = Failure()
        frame = failure.frames[-1]
        self.assertEqual(frame.locals, [('small', '1')])
        self.assertEqual(frame.globals, [('small', '1')])

    def test_bounded_repr(self):
        from zasync.failure import bounded_repr
        samples = [1, 'abc', b'xy', [1, (2,)], (), {}, set(), {3},
                   frozenset({4}), {'k': [1, {'n': None}]}, ValueError('e'),
                   KeyError('a', 2)]
        for value in samples:
            self.assertEqual(bounded_repr(value), repr(value))
        huge = ['q' * (1 << 20), {'k': b'r' * (1 << 20)}, range(3)]
        text = bounded_repr(huge, 50)
        self.assertEqual(len(text), 50)
        self.assertEqual(text, repr(huge)[:47] + '...')

        class Unrepresentable:
            def __repr__(self):
                raise RuntimeError('no repr')
        self.assertEqual(bounded_repr([Unrepresentable()]),
                         '<unrepresentable list: no repr>')
