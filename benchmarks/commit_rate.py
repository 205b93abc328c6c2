"""The ceiling every benchmark compares with: the storage's raw commit rate.
"""
import time

import persistent
import transaction


class Counter(persistent.Persistent):
    value = 0


def commit_rate(db, count=2000, key='bench.counter'):
    """Commits per second of tiny transactions (one small object changed)
    from one connection of ``db``; the object is removed afterwards."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    try:
        counter = conn.root()[key] = Counter()
        tm.commit()
        start = time.perf_counter()
        for i in range(count):
            counter.value = i
            tm.commit()
        elapsed = time.perf_counter() - start
        del conn.root()[key]
        tm.commit()
    finally:
        tm.abort()
        conn.close()
    return count / elapsed
