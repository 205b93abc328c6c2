"""A process that only enqueues: ``python -m zasync.tests.enqueue URI COUNT``.

Puts COUNT ``zasync.tests.jobs.record(number, pause)`` jobs in the default
queue, BATCH per transaction, and keeps each job under its number in
``root['zasync.tests.enqueued']`` (same transaction) so that tests can find
them.  Used by the soak test, like a web process of a real deployment.
"""
import argparse
import sys

import BTrees.OOBTree
import transaction

ENQUEUED = 'zasync.tests.enqueued'


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('uri')
    parser.add_argument('count', type=int)
    parser.add_argument('--batch', type=int, default=50)
    parser.add_argument('--pause', type=float, default=0.0)
    args = parser.parse_args(argv)

    import zodburi
    import ZODB
    from zasync import interfaces
    from zasync.job import Job
    from zasync.tests import jobs

    factory, dbkw = zodburi.resolve_uri(args.uri)
    db = ZODB.DB(factory(), **dbkw)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        for start in range(0, args.count, args.batch):
            for attempt in tm.attempts(10):
                with attempt:
                    root = conn.root()
                    queue = root[interfaces.KEY]['']
                    enqueued = root.get(ENQUEUED)
                    if enqueued is None:
                        enqueued = root[ENQUEUED] = BTrees.OOBTree.OOBTree()
                    for number in range(start,
                                        min(args.count, start + args.batch)):
                        enqueued[number] = queue.put(
                            Job(jobs.record, number, args.pause))
    finally:
        tm.abort()
        conn.close()
        db.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
