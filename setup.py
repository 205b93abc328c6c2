"""zasync: durable background jobs for ZODB, Zope Toolkit and Grok applications."""
import os

from setuptools import find_packages
from setuptools import setup


def read(*names):
    with open(os.path.join(os.path.dirname(__file__), *names)) as f:
        return f.read()


TESTS_REQUIRE = [
    'zope.testing >= 5.0',
    'zope.testrunner >= 6.0',
    'zope.principalregistry >= 5.0',  # runner doctest: <principal>
    'RelStorage >= 4.0',  # the PostgreSQL layer
    'psycopg2-binary >= 2.9',
    # functional layer: a real Zope WSGI application over HTTP
    'zope.app.wsgi >= 5.0',
    'zope.app.publication >= 5.0',
    'zope.securitypolicy >= 5.0',
    'zope.browserpage >= 5.0',
    'zope.login >= 3.0',
]

RELSTORAGE_REQUIRE = [
    'RelStorage >= 4.0',
    # libpq's driver (pure-Python pg8000 does not set TCP_NODELAY and waits
    # for delayed ACKs: about 40 ms a commit over TCP)
    'psycopg2-binary >= 2.9',
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
        'License :: OSI Approved :: Zope Public License',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
    ],
    python_requires='>=3.10',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    include_package_data=True,
    package_data={'zasync': ['*.zcml']},
    zip_safe=False,
    install_requires=[
        'setuptools',
        'BTrees >= 4.11',
        'persistent >= 4.9',
        'transaction >= 3.0',
        'ZODB >= 5.8',
        'ZEO >= 5.4',
        'zodburi >= 2.5',
        'Twisted >= 22.10',
        'zope.interface >= 5.5',
        'zope.component >= 5.1',
        'zope.event >= 4.6',
        'zope.minmax >= 2.3',
        'zope.processlifetime >= 2.4',
        'zope.security >= 6.0',
        'zope.authentication >= 5.0',
        'zope.configuration >= 5.0',
        'zope.schema >= 6.2',
        'ZConfig >= 3.6',
        'zope.app.appsetup >= 5.0',  # runner: zope.conf, product-config
        'zope.site >= 5.0',
        # Zope integration (manager, ZCML, traverser)
        'grokcore.component >= 4.0',
        'zope.container >= 5.0',
        'zope.location >= 5.0',
        'zope.publisher >= 6.0',
        'zope.traversing >= 5.0',
    ],
    extras_require={
        'test': TESTS_REQUIRE,
        'relstorage': RELSTORAGE_REQUIRE,
    },
    entry_points={
        'console_scripts': [
            'zasync = zasync.cli:main',
        ],
    },
)
