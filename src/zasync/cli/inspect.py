"""``zasync status``, ``jobs``, ``job ID`` and ``stats``: look into a
database's queues from the command line.

Each command opens the database (``--zodb URI`` or ``--zope-conf FILE``;
default: the demo's ``var/Data.fs``) read-only, asks ``zasync.inspection``
and prints a table -- or JSON with ``--json``.  It never writes: a
FileStorage is opened read-only (no lock, so a running worker may hold it),
and every transaction is aborted.

What each command reads is bounded whatever the number of jobs kept (see
``zasync.inspection``): ``jobs`` reads the jobs it lists (and at most
``inspection.COUNT_BUDGET`` more to say how many it left out), ``stats``
the lengths of the queues and collections and the newest
``inspection.STATS_WINDOW`` completed jobs, ``job ID`` the job and its
surroundings, whose reprs it cuts to ``inspection.REPR_LIMIT`` characters
unless given ``--full``.

A job's id is its oid for a job of the main database and ``OID@NAME`` for
one of the member database ``NAME`` of a multi-database (``--zope-conf``
with several ``<zodb>`` sections): ``jobs`` shows them so and ``job ID``
takes them back (``inspection.job_name``, ``inspection.load_job``).
"""
import argparse
import datetime
import json
import sys

from zasync import inspection
from zasync import utils
from zasync.cli.common import ReadOnlyDatabase
from zasync.cli.common import UsageError
from zasync.cli.common import add_database_arguments
from zasync.cli.common import positive_seconds
from zasync.cli.common import print_json
from zasync.cli.output import age
from zasync.cli.output import duration
from zasync.cli.output import short_time
from zasync.cli.output import table

__all__ = ['COMMANDS', 'add_commands', 'job', 'jobs', 'limit', 'stats',
           'status']


# --------------------------------------------------------------------------
# Options


def _database_options(parser):
    add_database_arguments(parser)
    parser.add_argument('--json', action='store_true',
                        help='print JSON instead of a table')
    parser.add_argument('--timeout', type=positive_seconds, default=10,
                        help='seconds to wait for a ZEO server (default 10)')


def limit(text):
    """A ``--limit``: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            '%r: give a whole number of jobs, 0 or more (0: all)' % (text,))
    return value


def unique_key(text):
    if not text:
        raise argparse.ArgumentTypeError('a unique key is a non-empty text')
    return text


def configure_status(parser):
    _database_options(parser)


def configure_jobs(parser):
    _database_options(parser)
    parser.add_argument(
        '--state', metavar='S',
        help='only jobs in these states (comma-separated): %s, the '
             'outcomes %s, or %s (jobs that cannot be loaded or run: their '
             'class, callable or an argument\'s class cannot be imported)'
             % (', '.join(inspection.STATE_NAMES),
                ', '.join(inspection.OUTCOMES + inspection.STOPPED),
                inspection.PROBLEM))
    parser.add_argument(
        '--callable', metavar='GLOB',
        help='only jobs whose callable\'s dotted name matches GLOB, e.g. '
             '"myapp.reports.*" or "*send_mail"')
    parser.add_argument('--limit', type=limit, default=100,
                        help='show at most this many jobs (default 100; 0: '
                             'all)')
    parser.add_argument(
        '--unique-key', metavar='KEY', type=unique_key,
        help='only the job that holds the unique key KEY (a job put with '
             'unique_key=KEY that has not completed)')


def configure_job(parser):
    _database_options(parser)
    parser.add_argument(
        'id', help='the job id, as "zasync jobs" shows it: its oid in '
                   'decimal (a job of the main database) or OID@DATABASE (a '
                   'job of the member DATABASE of a multi-database)')
    parser.add_argument(
        '--full', action='store_true',
        help='show the reprs of the call, the arguments, the result and the '
             'retry data in full (default: cut to %d characters each, '
             'followed by "...[N characters in all]")'
        % inspection.REPR_LIMIT)


def configure_stats(parser):
    _database_options(parser)


COMMANDS = [
    ('status', configure_status,
     'dispatchers (alive, dead, stopped), their agents and last pings, and '
     'the length of each queue'),
    ('jobs', configure_jobs,
     'list jobs: pending, claimed, running and recently completed'),
    ('job', configure_job,
     'show one job: call, status, times, retries, result or traceback'),
    ('stats', configure_stats,
     'job counts by state, outcomes, durations and recent throughput'),
]


def add_commands(subparsers):
    """Register ``zasync status``, ``jobs``, ``job`` and ``stats``."""
    functions = {'status': status, 'jobs': jobs, 'job': job, 'stats': stats}
    for name, configure, help in COMMANDS:
        parser = subparsers.add_parser(name, help=help, description=help)
        configure(parser)
        parser.set_defaults(func=functions[name])


# --------------------------------------------------------------------------
# zasync status


def status(args):
    with ReadOnlyDatabase(args) as database:
        database.queues()
        now = utils.now()   # (after the last pings we read)
        info = inspection.status_info(database.root, now)
    if args.json:
        print_json({'time': inspection.when(now), 'queues': info})
        return 0
    blocks = []
    for queue in info:
        head = 'queue %r: %d pending' % (queue['name'], queue['pending'])
        if queue['due_later']:
            head += ' (%d due later)' % queue['due_later']
        if queue.get('paused'):
            head += '; PAUSED (zasync resume starts it again)'

        rows = []
        for da in queue['dispatchers']:
            last_ping = da['last_ping'] and datetime.datetime.fromisoformat(
                da['last_ping'])
            activated = da['activated'] and datetime.datetime.fromisoformat(
                da['activated'])
            rows.append({
                'uuid': da['uuid'], 'state': da['state'],
                'activated': short_time(activated) if activated else '-',
                'ping': age(last_ping, now),
                'intervals': '%g/%g s' % (da['ping_interval'],
                                          da['death_interval']),
                'agents': ', '.join('%s %d/%d%s' % (
                    a['name'], len(a['jobs']), a['size'],
                    ' (cannot be read)' if a.get('problem') else '')
                    for a in da['agents']) or '-'})
        if rows:
            body = table(rows, [
                ('uuid', 'DISPATCHER'), ('state', 'STATE'),
                ('activated', 'ACTIVATED (UTC)'), ('ping', 'LAST PING'),
                ('intervals', 'PING/DEATH'), ('agents', 'AGENTS (JOBS/SIZE)')])
        else:
            body = 'no dispatcher has served this queue yet'
        if queue.get('schedules'):
            body += '\n' + _schedules_table(queue['schedules'])
        blocks.append(head + '\n' + body)
    print('\n\n'.join(blocks) if blocks else 'no queues')
    return 0


def _schedules_table(schedules):
    """The periodic jobs of a queue (``inspection.schedules_info``)."""
    rows = []
    for info in schedules:
        last = info['last_run'] and datetime.datetime.fromisoformat(
            info['last_run'])
        following = info['next_run'] and datetime.datetime.fromisoformat(
            info['next_run'])
        rows.append({
            'name': info['name'], 'callable': info['callable'],
            'when': info['when'], 'catch_up': info['catch_up'],
            'last': ('%s (job %s)' % (short_time(last), info['last_job'])
                     if last else 'never'),
            'next': short_time(following) if following else '-',
            'jobs': info['jobs_put'],
            'error': info['last_error']})
    columns = [('name', 'SCHEDULE'), ('callable', 'CALLABLE'),
               ('when', 'WHEN'), ('catch_up', 'CATCH-UP'),
               ('last', 'LAST RUN (UTC)'), ('next', 'NEXT RUN (UTC)'),
               ('jobs', 'JOBS')]
    if any(row['error'] for row in rows):
        columns.append(('error', 'LAST ERROR'))
    return table(rows, columns)


# --------------------------------------------------------------------------
# zasync jobs


def _print_json_rows(rows):
    """Print ``rows`` (an iterable of dicts) as ``print_json`` prints a
    list, one row at a time."""
    out = sys.stdout
    first = True
    for row in rows:
        text = json.dumps(row, indent=2, sort_keys=True, default=str)
        out.write(('[\n  ' if first else ',\n  ')
                  + text.replace('\n', '\n  '))
        first = False
    out.write('[]\n' if first else '\n]\n')


def _more_line(count, exact, filtered):
    if exact:
        return '(%d more; use --limit)' % count if count else None
    if count:
        return '(%s %d more; use --limit)' % (
            'at least' if filtered else 'about', count)
    return ('(perhaps more: the next %d jobs do not match; --limit 0 '
            'looks at all)' % inspection.COUNT_BUDGET)


def jobs(args):
    try:
        states = inspection.parse_states(args.state)
    except ValueError as e:
        raise UsageError(str(e))
    with ReadOnlyDatabase(args) as database:
        database.queues()
        if args.unique_key is not None:
            candidates = inspection.unique_jobs(database.root,
                                                args.unique_key)
        else:
            candidates = inspection.iter_jobs(database.root)
        selected = (found for found in candidates
                    if inspection.matches(found, states, args.callable))

        def summaries():
            for number, found in enumerate(selected, 1):
                row = found.summary()
                row['location'] = found.location
                yield row
                if number == args.limit:
                    break
                if not number % 1000:
                    database.conn.cacheGC()   # (a long listing)
        if args.json:
            _print_json_rows(summaries())
            return 0
        rows = list(summaries())
        more = None
        if args.limit and len(rows) == args.limit:
            count, exact = inspection.count_more(
                candidates, database.root, states, args.callable,
                shown=len(rows))
            more = _more_line(count, exact, bool(states or args.callable))
    if not rows:
        print('no jobs')
        return 0
    for row in rows:
        row['started'] = short_time(
            row['started'] and datetime.datetime.fromisoformat(
                row['started']))
        call = row['call']
        row['call'] = call if len(call) <= 50 else call[:47] + '...'
        if row['problem']:
            row['result'] = 'broken: ' + row['problem']
    print(table(rows, [('id', 'ID'), ('status', 'STATUS'),
                       ('location', 'WHERE'), ('call', 'CALL'),
                       ('started', 'STARTED (UTC)'), ('result', 'RESULT')]))
    if more:
        print(more)
    return 0


# --------------------------------------------------------------------------
# zasync job ID


def job(args):
    with ReadOnlyDatabase(args) as database:
        try:
            found = inspection.load_job(database.conn, args.id)
        except (ValueError, LookupError) as e:
            raise UsageError(str(e))
        info = inspection.job_details(found, database.root,
                                      full=args.full)
    if args.json:
        print_json(info)
        return 0
    lines = []

    def line(title, value):
        if value not in (None, '', [], {}):
            lines.append('%-13s %s' % (title + ':', value))

    line('job', info['id'])
    line('call', info['call'])
    line('status', info['status'] + (
        ' (%s)' % info['outcome'] if info['outcome'] else '') + (
        ': %s' % info['stopped'].replace('-', ' ') if info.get('stopped')
        else ''))
    line('queue', repr(info['queue']) if info['queue'] is not None else None)
    line('where', info['where'] + (
        ' in agent %r of dispatcher %s' % (info['agent'], info['dispatcher'])
        if info['agent'] else ''))
    line('put by', info['assigner'])
    line('begin after', info['begin_after'])
    line('begin by', info['begin_by'] and '%g s' % info['begin_by'])
    line('quotas', ', '.join(info['quota_names']))
    line('started', info['started'])
    line('ended', info['ended'])
    line('duration', duration(info['duration'])
         if info['duration'] is not None else None)
    line('retry policy', info['retry_policy'])
    for key, value in sorted(info['retry_data'].items()):
        line('  ' + key, value)
    line('annotations', ', '.join(info['annotations']))
    for callback in info['callbacks']:
        line('callback', '%s %s [%s]' % (callback['id'], callback['call'],
                                         callback['status']))
    line('result', info['result'])
    line('error', info['error'])
    line('broken', info['problem'])
    print('\n'.join(lines))
    if info['traceback']:
        print()
        print(info['traceback'].rstrip())
    return 0


# --------------------------------------------------------------------------
# zasync stats


def stats(args):
    with ReadOnlyDatabase(args) as database:
        database.queues()
        now = utils.now()
        info = inspection.stats_info(database.root, now)
    if args.json:
        print_json(info)
        return 0
    names = list(inspection.STATE_NAMES) + list(inspection.OUTCOMES)
    if info['jobs'][inspection.PROBLEM]:
        names.append(inspection.PROBLEM)
    rows = [{'state': name, 'count': info['jobs'][name]} for name in names]
    print(table(rows, [('state', 'STATE'), ('count', 'JOBS')]))
    window = info['window']
    durations = info['durations']
    print()
    if not window['all']:
        print('outcomes, durations and throughput: of the newest %d '
              'completed jobs (since %s)' % (
                  window['read'], short_time(
                      datetime.datetime.fromisoformat(window['since']))
                  if window['since'] else '-'))
    print('durations of %d completed job(s): median %s, p90 %s, max %s' % (
        durations['count'], duration(durations['median']),
        duration(durations['p90']), duration(durations['max'])))
    minute = '%d' % info['completed_last_minute']
    hour = '%d' % info['completed_last_hour']
    if not window['all'] and window['since']:
        # The window may not reach back that far: then, lower bounds.
        reach = now - datetime.datetime.fromisoformat(window['since'])
        if reach < datetime.timedelta(minutes=1):
            minute = 'at least ' + minute
        if reach < datetime.timedelta(hours=1):
            hour = 'at least ' + hour
    print('completed in the last minute: %s, in the last hour: %s' % (
        minute, hour))
    if info['throughput']:
        print('throughput while completing them: %.3g jobs/s'
              % info['throughput'])
    print('dispatchers: %(alive)d alive, %(dead)d dead, %(stopped)d stopped'
          % info['dispatchers'])
    return 0
