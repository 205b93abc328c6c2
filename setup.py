"""zasync: durable background jobs for ZODB, Zope Toolkit and Grok applications."""
import os

from setuptools import find_packages
from setuptools import setup


def read(*names):
    with open(os.path.join(os.path.dirname(__file__), *names)) as f:
        return f.read()


# The core: plain ZODB programs -- jobs, queues, dispatchers, agents, the
# ``zasync`` command (demo, worker, inspection).  ``pip install zasync``.
INSTALL_REQUIRES = [
    'BTrees >= 4.11',
    'persistent >= 4.9',
    'transaction >= 3.0',
    'ZODB >= 6.3',   # DB(class_factory=), <zodb> class-factory
    'zodburi >= 2.5',   # zasync worker --zodb URI
    'Twisted >= 22.10',  # the dispatcher's reactor
    'zope.interface >= 5.5',
    'zope.component >= 5.1',
    'zope.event >= 4.6',
    'zope.minmax >= 2.3',  # the queue's conflict-resolving counters
    # periodic jobs (zasync.schedule): five-field cron expressions, computed
    # in a zoneinfo timezone across DST changes as Debian's cron does;
    # small, no dependencies, maintained (croniter was declared abandoned
    # in 2025 before it found new maintainers)
    'cronsim >= 2.6',
]

# Zope Toolkit and Grok applications: the ZCML (configure.zcml,
# single.zcml, multidb.zcml, the zasync:jobs / zasync:dispatcher
# directives), the JobManager and its traversal, jobs run with a site and
# a principal (z3, background), and zope.conf (runner, worker --zope-conf).
ZOPE_REQUIRE = [
    'zope.processlifetime >= 2.4',  # IDatabaseOpened: the installers
    'zope.configuration >= 5.0',
    'zope.schema >= 6.2',
    'zope.security >= 6.0',
    'zope.authentication >= 5.0',
    'zope.site >= 5.0',
    'zope.location >= 5.0',
    'zope.container >= 5.0',
    'zope.publisher >= 6.0',
    'zope.traversing >= 5.0',
    'grokcore.component >= 4.0',
    'ZConfig >= 3.6',
    'zope.app.appsetup >= 5.0',  # runner: zope.conf, product-config
]

ZEO_REQUIRE = [
    'ZEO >= 5.4',
]

RELSTORAGE_REQUIRE = [
    'RelStorage >= 4.0',
    # libpq's driver (pure-Python pg8000 does not set TCP_NODELAY and waits
    # for delayed ACKs: about 40 ms a commit over TCP)
    'psycopg2-binary >= 2.9',
]

# zasync migrate: zc.async databases written on Python 2 (zodbupdate as a
# library for the pickles; its entry points carry zasync's renames).
MIGRATE_REQUIRE = [
    'zodbupdate >= 2.0',
    'zodbpickle >= 3.0',
]

# benchmarks/bench_peers.py: zasync beside Huey on SQLite (not needed by the
# tests, so not in ``test``).
BENCH_REQUIRE = [
    'huey >= 3.0',
]

# The dashboard, JSON API and Prometheus metrics: ``zasync web``,
# ``zasync worker --metrics-listen``, browser.zcml (zasync.web).
WEB_REQUIRE = [
    'waitress >= 2.1',
    'prometheus_client >= 0.17',
    'WebOb >= 1.8',
    'zope.password >= 5.0',  # zasync web --users FILE: salted hashes
]

# Everything the tests need (buildout installs ``zasync [test]``): every
# extra, the test runner, the functional layer's Zope WSGI application
# (tests/ftapp.zcml), and the tools of .ci/run.
TESTS_REQUIRE = (ZOPE_REQUIRE + ZEO_REQUIRE + RELSTORAGE_REQUIRE
                 + WEB_REQUIRE) + MIGRATE_REQUIRE + [
    # the web tests: a WSGI test client, and a real browser (Chromium)
    'WebTest >= 3.0',
    'selenium >= 4.10, < 4.52',  # (4.52 needs a certifi not on PyPI yet)
    'zope.testing >= 5.0',
    'zope.testrunner >= 6.0',
    'zope.principalregistry >= 5.0',  # runner doctest: <principal>
    # functional layer: a real Zope WSGI application over HTTP
    'zope.app.wsgi >= 5.0',
    'zope.app.publication >= 5.0',
    'zope.securitypolicy >= 5.0',
    'zope.browserpage >= 5.0',
    'zope.login >= 3.0',
    'zope.annotation >= 5.0',
    'zope.password >= 5.0',
    'zope.error >= 5.0',
    # .ci/run
    'coverage >= 7.0',
    'flake8 >= 7.0',
]

setup(
    name='zasync',
    version='0.1.0.dev0',
    description=(
        'Durable background jobs for ZODB, Zope Toolkit and Grok '
        'applications (the Python 3 successor of zc.async).'),
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
    license='ZPL-2.1',
    keywords='zodb zope grok jobs queue background async',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Framework :: ZODB',
        'Framework :: Zope :: 3',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
    ],
    python_requires='>=3.10',
    # The narrative documentation (docs/*.rst, doctests) goes into the
    # wheel too, as the data of a directory ``zasync/docs``: an installed
    # zasync can be read, and tested, without the checkout.
    package_dir={'': 'src', 'zasync.docs': 'docs'},
    packages=find_packages('src') + ['zasync.docs'],
    include_package_data=True,
    package_data={
        'zasync': ['*.zcml'],
        'zasync.tests': ['*.zcml', 'fixtures/*/*'],
        'zasync.web': ['templates/*.html', 'static/*'],
        'zasync.docs': ['*.rst'],
    },
    zip_safe=False,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'zope': ZOPE_REQUIRE,
        'zeo': ZEO_REQUIRE,
        'relstorage': RELSTORAGE_REQUIRE,
        'web': WEB_REQUIRE,
        'migrate': MIGRATE_REQUIRE,
        'test': TESTS_REQUIRE,
        'bench': BENCH_REQUIRE,
    },
    entry_points={
        'console_scripts': [
            'zasync = zasync.cli:main',
        ],
        # zodbupdate (--convert-py3) over a whole database applies these
        'zodbupdate': [
            'zasync = zasync.migration.rules:renames',
        ],
        'zodbupdate.decode': [
            'zasync = zasync.migration.rules:decoders',
        ],
    },
)
