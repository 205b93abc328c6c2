"""Scale-out throughput: worker *processes* on ZEO or RelStorage.

    bin/py benchmarks/bench.py --storage zeo --workers 1|2 [--threads 3]
                               [--jobs 5000] [--latency-jobs 300]
                               [--group-commit off|on [--group 50]]
    bin/py benchmarks/bench.py --storage relstorage --workers 2

(``bench.py`` hands ``--storage zeo|relstorage`` over to this module.)
With these storages ``--workers`` is the number of ``zasync worker``
processes, each with one agent of ``--threads`` threads.  A throw-away
server is started on 127.0.0.1 (``zasync.testing.servers``: ZEO, or
PostgreSQL for RelStorage with psycopg2).  One run prints:

- the storage's raw commit rate for tiny transactions from one client
  (the ceiling);
- jobs/s for ``--jobs`` trivial jobs (``operator.add``) queued before the
  workers' agents get their threads, until the queue and the agents are
  empty; and its ratio to the ceiling;
- median and p99 latency from the enqueuing commit to the job starting, on
  idle workers (``time.time`` as the job: it returns when it started);
- the CPU the server process (ZEO) and each worker used during the
  throughput run, in per cent of one core (what bounds the run on a small
  machine);
- the peak memory (VmHWM) of each worker process, and (when the web
  extra is installed: each worker serves ``--metrics-listen``) its claims
  tried again after a conflict and its group commits, read from its
  ``/metrics``.
"""
import operator
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

from zasync import interfaces
from zasync.testing.processes import WorkerProcess
from zasync.testing.processes import new_connection
from zasync.testing.processes import stop_all
from zasync.testing.processes import wait_for_worker
from zasync.testing.processes import wait_until

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from commit_rate import commit_rate  # noqa: E402 (beside this file)

OPTIONS = ['--poll-interval', '1', '--log-level', 'WARNING']


def start_server(kind, directory):
    from zasync.testing import servers
    if kind == 'zeo':
        os.makedirs(os.path.join(directory, 'zeo'))
        return servers.ZEOServer(os.path.join(directory, 'zeo')).start()
    if kind == 'relstorage':
        # (its own temporary directory: the postgres user must reach it)
        return servers.PostgreSQLServer().start()
    raise SystemExit('storage %r is not a scale-out storage' % (kind,))


def server_uri(server):
    return server.uri


def ceiling(db, count=2000):
    return commit_rate(db, count)


def peak_memory(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (None if
    unknown)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            'SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None


def process_pids(server, workers):
    """``[(name, pid)]`` of the server process (ZEO) and the workers."""
    from zasync.testing import servers
    pids = []
    process = getattr(server, 'process', None)
    if isinstance(server, servers.ZEOServer) and process is not None:
        # (PostgreSQL works in one backend process per connection: not
        # counted)
        pids.append(('server', process.pid))
    pids.extend((worker.name, worker.pid) for worker in workers)
    return pids


def metrics_options():
    """``--metrics-listen`` on a free port, or nothing without the web
    extra; and the port."""
    try:
        import prometheus_client  # noqa: F401
        import waitress  # noqa: F401
    except ImportError:
        return [], None
    from zasync.testing import servers
    port = servers.free_port()
    return ['--metrics-listen', '127.0.0.1:%d' % port], port


def worker_counters(port, names=('claim_conflicts', 'group_commits',
                                 'grouped_jobs', 'run_in_claim')):
    """The worker's counters ``names`` from its ``/metrics``."""
    with urllib.request.urlopen(
            'http://127.0.0.1:%d/metrics' % port, timeout=10) as response:
        text = response.read().decode('utf-8')
    found = {}
    for line in text.splitlines():
        for name in names:
            if line.startswith('zasync_worker_%s_total ' % name):
                found[name] = float(line.split()[1])
    return found


def _idle(queue, uuids):
    if len(queue):
        return False
    for uuid in uuids:
        for agent in queue.dispatchers[uuid].values():
            if len(agent):
                return False
    return True


def run(args):
    from zasync.job import Job
    directory = tempfile.mkdtemp(prefix='zasync-bench-')
    workers = []
    server = None
    db = None
    try:
        server = start_server(args.storage, directory)
        uri = server_uri(server)
        db = server.db()
        rate = ceiling(db)
        print('storage: %s, worker processes: %d, threads each: %d' % (
            args.storage, args.workers, args.threads))
        print('ceiling (tiny commits/s, one client): %8.0f' % rate)

        # Workers whose agent has no threads yet.
        group = getattr(args, 'group_commit', 'off').split(',')[0]
        group_size = getattr(args, 'group', 50) if group == 'on' else 1
        print('group commits: %s' % ('on (%d)' % group_size
                                     if group_size > 1 else 'off'))
        ports = []
        for n in range(args.workers):
            metrics, port = metrics_options()
            ports.append(port)
            workers.append(WorkerProcess(
                uri, 'worker-%d' % n, directory,
                OPTIONS + metrics + ['--agent', 'main:0',
                                     '--group-commit', str(group_size)]
            ).start())
        conn = new_connection(db)
        tm = conn.transaction_manager
        for worker in workers:
            wait_for_worker(conn, worker, 60)
        queue = conn.root()[interfaces.KEY]['']
        uuids = [worker.uuid for worker in workers]

        batch = 500
        for start in range(0, args.jobs, batch):
            for i in range(start, min(args.jobs, start + batch)):
                queue.put(Job(operator.add, i, 1))
            tm.commit()
        # Now the agents get their threads: the workers poll at once
        # (their records changed) and start claiming.
        for uuid in uuids:
            queue.dispatchers[uuid]['main'].size = args.threads
        pids = process_pids(server, workers)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids}
        tm.commit()
        begin = time.perf_counter()
        wait_until(conn, lambda: _idle(queue, uuids), 900)
        elapsed = time.perf_counter() - begin
        cpu = []
        for name, pid in pids:
            after = cpu_seconds(pid)
            if after is not None and cpu_before[name] is not None:
                cpu.append('%s %.0f %%' % (
                    name, 100 * (after - cpu_before[name]) / elapsed))
        counters_after_run = [
            worker_counters(port) if port is not None else {}
            for port in ports]
        jobs_per_second = args.jobs / elapsed
        print('jobs/s (%d trivial jobs):          %8.0f   (%.2f s)'
              % (args.jobs, jobs_per_second, elapsed))
        print('ratio jobs/s / ceiling:              %8.2f'
              % (jobs_per_second / rate))
        if cpu:
            print('CPU during the run (of one core; %d cores): %s'
                  % (os.cpu_count(), ', '.join(cpu)))
        for worker, counters in zip(workers, counters_after_run):
            if counters:
                print('%s during the run: claims tried again %d, group '
                      'commits %d (%d jobs)' % (
                          worker.name, counters.get('claim_conflicts', 0),
                          counters.get('group_commits', 0),
                          counters.get('grouped_jobs', 0)))

        samples = []
        for i in range(args.latency_jobs):
            job = queue.put(Job(time.time))
            tm.commit()
            committed = time.time()
            wait_until(conn, lambda: job.status == interfaces.COMPLETED, 30)
            samples.append(max(0.0, job.result - committed))
        if samples:
            samples.sort()
            p99 = samples[min(len(samples) - 1,
                              max(0, round(0.99 * len(samples)) - 1))]
            print('enqueue->start latency (%d jobs): p50 %.2f ms, p99 %.2f '
                  'ms' % (len(samples), statistics.median(samples) * 1000,
                          p99 * 1000))
        for worker in workers:
            peak = peak_memory(worker.pid)
            if peak is not None:
                print('peak memory of %s (VmHWM):  %8.1f MB'
                      % (worker.name, peak))
        for worker, port in zip(workers, ports):
            if port is not None:
                counters = worker_counters(port)
                print('%s, in all: claims tried again %d, group commits '
                      '%d (%d jobs), jobs run in their claim %d' % (
                          worker.name, counters.get('claim_conflicts', 0),
                          counters.get('group_commits', 0),
                          counters.get('grouped_jobs', 0),
                          counters.get('run_in_claim', 0)))
        tm.abort()
        conn.close()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        return jobs_per_second, rate
    finally:
        stop_all()
        if db is not None:
            db.close()
        if server is not None:
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
