"""Job callables for tests and documents whose jobs run in worker
*processes*: they must be importable there, so they live in a real module.
"""
import os
import threading
import time

import BTrees.OOBTree
import transaction

from zasync import local

GATES = 'zasync.tests.gates'
RECORDS = 'zasync.tests.records'


def _own_connection(job):
    """A connection of the job's database with a transaction manager of
    its own (to look at the database without touching the job's
    transaction)."""
    tm = transaction.TransactionManager()
    return job._p_jar.db().open(transaction_manager=tm)


def open_gate(root, name):
    """Open the gate ``name`` (the caller commits)."""
    gates = root.get(GATES)
    if gates is None:
        gates = root[GATES] = BTrees.OOBTree.OOBTree()
    gates[name] = True


def wait_for_gate(name, result=None, timeout=120):
    """Block until the gate ``name`` is open (see ``open_gate``), then
    return ``result`` -- a job that runs exactly as long as a test wants.
    Notes the pid of the process running it (``ran in``)."""
    job = local.getJob()
    conn = _own_connection(job)
    deadline = time.monotonic() + timeout
    try:
        while True:
            conn.transaction_manager.begin()
            gates = conn.root().get(GATES)
            if gates is not None and gates.get(name):
                return result
            if time.monotonic() > deadline:
                raise RuntimeError('gate %r never opened' % (name,))
            time.sleep(0.02)
    finally:
        conn.transaction_manager.abort()
        conn.close()


def prepare_records(root, numbers):
    """The record of jobs' effects: one empty entry per job number (jobs
    then only change values, which concurrent commits merge)."""
    tree = root.get(RECORDS)
    if tree is None:
        tree = root[RECORDS] = BTrees.OOBTree.OOBTree()
    for number in numbers:
        tree[number] = ()
    return tree


def recorded(root, number):
    """``(job id, pid)`` pairs recorded under ``number``."""
    return root[RECORDS][number]


def record(number, pause=0.0):
    """Record this job's own id (its oid) and the pid of the process that
    ran it under ``number``; committed with the job's result."""
    job = local.getJob()
    if pause:
        time.sleep(pause)
    tree = job._p_jar.root()[RECORDS]
    job_id = int.from_bytes(job._p_oid, 'big')
    tree[number] = tree[number] + ((job_id, os.getpid()),)
    return job_id


def wait_then_record(gate, number):
    """Wait for the gate, then ``record(number)``: a long job whose effect
    shows who performed it, and how often."""
    wait_for_gate(gate)
    return record(number)


def pid():
    """The pid of the process running the job."""
    return os.getpid()


def nap(seconds, result=None):
    time.sleep(seconds)
    return result


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def write_then_loop(key, guard=False):
    """Write ``root[key] = 1`` in the job's transaction, then loop in
    Python until stopped (a timeout); with ``guard``, every ``Exception``
    is caught on the way, as careless job code does."""
    local.getJob()._p_jar.root()[key] = 1
    count = 0
    while True:
        try:
            count += 1
        except Exception:
            if not guard:
                raise


#: released by a test to let ``write_then_block`` return
RELEASE = threading.Event()


def write_then_block(key, late_key=None):
    """Write ``root[key] = 1``, then block in C code (a lock) until
    ``RELEASE`` is set -- an asynchronous exception cannot reach it --;
    then write ``root[late_key] = 1`` too, and return."""
    root = local.getJob()._p_jar.root()
    root[key] = 1
    RELEASE.wait()
    if late_key is not None:
        root[late_key] = 1
    return 'came back'


def swallow_then_check(key):
    """Write ``root[key] = 1``, then loop, swallowing every exception --
    even the dispatcher's -- but calling ``raise_if_cancelled``."""
    local.getJob()._p_jar.root()[key] = 1
    while True:
        try:
            local.raise_if_cancelled()
        except BaseException:
            raise
        try:
            time.sleep(0.01)
        except BaseException:
            pass
