"""Group commits: several short jobs of one worker thread in one transaction.

A worker thread's connection uses a ``GroupingTransactionManager``.  Out
of a group it is a plain ``transaction.TransactionManager``.  In a group
(``start_group()`` ... ``end_group()``) one real transaction stays open
for several jobs, and what the jobs' code asks of the manager is
mapped onto it:

- ``job_starts()`` (the worker, before a job runs) and ``job_done()``
  (after it returned) bracket what one job writes;
- the job's ``commit()`` calls change nothing: its effects and its result
  wait in the real transaction for the group's commit (nothing is
  visible to others yet);
- ``abort()`` and ``begin()`` between jobs change nothing either; in the
  middle of a job -- its callable failed, or its commit did -- they
  cannot undo that job alone (a savepoint per job would re-pickle every
  container a job changes, as often as a commit does): unless the job is
  the group's first and has not "committed" yet (then the real
  transaction is aborted and begun again, and the group goes on), they
  raise ``GroupSplit``;
- ``end_group()`` commits the real transaction: every job of the group
  commits its effects and its result together, or -- on a conflict or any
  other error -- none does.

A group may also go on in the transaction that claimed its first job
(``start_group(claimed=True)``: the claim commits with the group, see
``AgentThreadPool``): then no job of it can abort alone, not even the
first -- aborting would lose the claim -- and ``abort()`` or ``begin()``
in the middle of any job raise ``GroupSplit``.

After a ``GroupSplit`` or a failed group commit, ``abandon_group()``
aborts everything and the worker runs the group's jobs again, one per
transaction: none of them had committed, so no callable whose effects
committed runs again, and no job's effects commit without its result.  A
group whose transaction was doomed (one of its jobs was cancelled) splits
too.  See ``docs/jobs_and_transactions.rst``.
"""
import transaction

__all__ = ['GroupingTransactionManager', 'GroupSplit']


class GroupSplit(BaseException):
    """The group cannot go on: abort it, and run its jobs one per
    transaction.  (A ``BaseException``: job code must not catch it.)"""


class GroupingTransactionManager(transaction.TransactionManager):
    """A transaction manager that can hold several jobs' commits in one
    real transaction (see the module)."""

    grouping = False
    _dirty = False      # a job runs (between job_starts and job_done)
    _job_commits = 0    # commits the running job asked for
    _committed = 0      # jobs of the group that are done
    _claimed = False    # the group goes on in its first job's claim

    def start_group(self, claimed=False):
        """Begin a real transaction, and group what follows in it; with
        ``claimed``, group what follows in the transaction going on (the
        claim of the group's first job, which commits with it)."""
        txn = self.get() if claimed else super().begin()
        self.grouping = True
        self._dirty = False
        self._committed = 0
        self._claimed = claimed
        return txn

    def job_starts(self):
        """What is written from now on is the next job's."""
        if self.grouping:
            self._dirty = True
            self._job_commits = 0

    def job_done(self):
        """The job returned: what it wrote waits for the group's
        commit."""
        if self.grouping and self._dirty:
            self._dirty = False
            self._committed += 1

    def end_group(self):
        """Commit the group's real transaction (errors propagate: then
        ``abandon_group()``); return how many jobs it committed."""
        committed = self._committed
        self.grouping = False
        super().commit()
        return committed

    def abandon_group(self):
        """Abort the group's real transaction."""
        self.grouping = False
        super().abort()

    def begin(self):
        if not self.grouping:
            return super().begin()
        self._undo()
        return self.get()

    def commit(self):
        if not self.grouping:
            return super().commit()
        if self.get().isDoomed():
            raise GroupSplit('the transaction of the group is doomed')
        if self._dirty:
            self._job_commits += 1

    def abort(self):
        if not self.grouping:
            return super().abort()
        self._undo()

    def _undo(self):
        """Discard what the running job wrote since it started."""
        if not self._dirty:
            return   # (between jobs: nothing to discard)
        if self._committed or self._job_commits or self._claimed:
            raise GroupSplit('a job of the group has to abort')
        super().abort()   # (the group's first job: nothing else is lost)
        super().begin()
