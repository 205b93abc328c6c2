"""The dashboard's cost with 1,000 and with 100,000 completed jobs.

Builds two FileStorage databases as ``bench_inspection.py`` does (two
dispatcher records with an agent each, holding a job; the completed jobs
spread over both agents and the last hours, one in ten failed; a few
pending jobs; a job container), then times requests to ``zasync web``'s
application (``zasync.web.WebApp``, through WebTest, a real WSGI client):
the jobs page, ``/api/jobs`` and its second page, a filtered page, a job
page, the overview and its API, and ``/metrics`` (a later scrape).  It
prints the median of each, and the ratio from the small database to the
large one (the target of issue 15: at most 3 for the jobs page and
``/api/jobs``).  Not a test: run it by hand::

    bin/py benchmarks/bench_web.py [--small 1000] [--large 100000]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import ZODB
import ZODB.FileStorage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_inspection import build  # noqa: E402

REQUESTS = [
    ('jobs page', '/jobs'),
    ('/api/jobs', '/api/jobs'),
    ('/api/jobs page 2', None),    # (the cursor of the first page)
    ('/api/jobs?state=failed', '/api/jobs?state=failed'),
    ('/jobs/ID', None),
    ('overview', '/'),
    ('/api/overview', '/api/overview'),
    ('/metrics', '/metrics'),
]


def measure(path, ids, repeat):
    import webtest
    from zasync.web.app import WebApp
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, read_only=True),
                 cache_size=5000)
    try:
        app = webtest.TestApp(WebApp(db))
        app.get('/metrics')   # (the first scrape reads a window: once)
        cursor = app.get('/api/jobs').json['next']
        urls = dict(REQUESTS)
        urls['/api/jobs page 2'] = '/api/jobs?after=' + cursor
        urls['/jobs/ID'] = '/jobs/' + ids[0]
        times = {}
        for name, url in REQUESTS:
            samples = []
            for _ in range(repeat):
                db.cacheMinimize()   # (as a server that has not seen them)
                start = time.perf_counter()
                app.get(urls[name])
                samples.append(time.perf_counter() - start)
            times[name] = statistics.median(samples)
        return times
    finally:
        db.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--small', type=int, default=1000)
    parser.add_argument('--large', type=int, default=100000)
    parser.add_argument('--span-hours', type=float, default=24)
    parser.add_argument('--repeat', type=int, default=7)
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(prefix='zasync-bench-web-')
    try:
        results = {}
        for count in (args.small, args.large):
            path = os.path.join(directory, '%d.fs' % count)
            start = time.perf_counter()
            ids = build(path, count, args.span_hours)
            print('built %d completed jobs in %.1f s' % (
                count, time.perf_counter() - start), flush=True)
            results[count] = measure(path, ids, args.repeat)
        small, large = results[args.small], results[args.large]
        print()
        print('%-26s %10s %10s %7s' % ('request', '%d jobs' % args.small,
                                       '%d jobs' % args.large, 'ratio'))
        worst = 0
        for name, url in REQUESTS:
            ratio = large[name] / small[name]
            if name in ('jobs page', '/api/jobs'):
                worst = max(worst, ratio)
            print('%-26s %8.1f ms %8.1f ms %7.2f' % (
                name, small[name] * 1e3, large[name] * 1e3, ratio))
        print()
        print('jobs page and /api/jobs: worst ratio %.2f (target <= 3): %s'
              % (worst, 'ok' if worst <= 3 else 'TOO SLOW'))
        return 0 if worst <= 3 else 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
