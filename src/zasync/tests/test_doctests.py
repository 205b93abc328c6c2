"""Run every narrative document in ``docs/`` as a doctest.

Each document runs in a fresh temporary directory, with a clean component
registry, and with its globals installed as a real module so that the
functions it defines are importable -- and hence usable as job callables,
exactly as in application code.
"""
import doctest
import glob
import os
import re
import shutil
import tempfile
import unittest

import transaction
import zope.component.testing
import zope.testing.module
import zope.testing.renormalizing

import zasync
import zasync.testing
from zasync.testing.processes import ScaleOutLayer
from zasync.testing.processes import WorkersLayer

#: where the documents are: beside the package in a wheel (``zasync/docs``,
#: see setup.py), else in the checkout (``src/zasync/../../docs``)
DOCS_CANDIDATES = [
    os.path.join(os.path.dirname(zasync.__file__), 'docs'),
    os.path.normpath(os.path.join(
        os.path.dirname(zasync.__file__), os.pardir, os.pardir, 'docs')),
]

OPTIONFLAGS = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
               | doctest.REPORT_NDIFF)

CHECKER = zope.testing.renormalizing.RENormalizing([
    # Object addresses differ from run to run.
    (re.compile(r' at 0x[0-9a-fA-F]+>'), ' at 0x...>'),
])

# Documents that need a layer (real servers, processes): name -> layer.
LAYERS = {}


LAYERS['catastrophes.rst'] = WorkersLayer   # a ZEOLayer
LAYERS['poison.rst'] = WorkersLayer
LAYERS['control.rst'] = WorkersLayer
LAYERS['migration.rst'] = WorkersLayer  # its own ZEO server and worker
LAYERS['deployment.rst'] = ScaleOutLayer    # ZEO and PostgreSQL
LAYERS['periodic.rst'] = WorkersLayer   # two worker processes on ZEO


def module_name(test):
    base = os.path.splitext(os.path.basename(test.filename))[0]
    return 'zasync.doctest_' + re.sub(r'\W', '_', base)


def setUp(test):
    zope.component.testing.setUp(test)
    zope.testing.module.setUp(test, module_name(test))
    test.globs['_old_cwd'] = os.getcwd()
    test.globs['tmpdir'] = tempfile.mkdtemp(prefix='zasync-doctest-')
    os.chdir(test.globs['tmpdir'])


def tearDown(test):
    transaction.abort()
    # Stop the dispatchers (reactor and worker threads) a document left
    # running, e.g. after a failure; loud if one does not stop.
    zasync.testing.tear_down_dispatchers()
    for name in ('db', 'db2'):
        db = test.globs.get(name)
        close = getattr(db, 'close', None)
        if close is not None:
            close()
    os.chdir(test.globs['_old_cwd'])
    shutil.rmtree(test.globs['tmpdir'], ignore_errors=True)
    zope.testing.module.tearDown(test)
    zope.component.testing.tearDown(test)


class NoDocumentsError(RuntimeError):
    """The doctest collector found no documents: a broken checkout or
    release must not pass for a green test run."""


def doc_files(candidates=None):
    """The documents of the first directory of ``candidates`` that has
    any; ``NoDocumentsError`` if none has."""
    candidates = DOCS_CANDIDATES if candidates is None else candidates
    for directory in candidates:
        found = sorted(glob.glob(os.path.join(directory, '*.rst')))
        if found:
            return found
    raise NoDocumentsError('no documents (*.rst) in %s'
                           % ' or '.join(candidates))


def test_suite():
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(CollectorTests)
    for path in doc_files():
        doc_suite = doctest.DocFileSuite(
            path, module_relative=False, setUp=setUp, tearDown=tearDown,
            optionflags=OPTIONFLAGS, checker=CHECKER, encoding='utf-8')
        layer = LAYERS.get(os.path.basename(path))
        if layer is not None:
            doc_suite.layer = layer
        suite.addTest(doc_suite)
    return suite


class CollectorTests(unittest.TestCase):

    def test_the_documents_are_found(self):
        names = [os.path.basename(path) for path in doc_files()]
        self.assertIn('job.rst', names)
        self.assertIn('catastrophes.rst', names)
        self.assertIn('porting.rst', names)   # issue 17

    def test_no_documents_is_an_error(self):
        with tempfile.TemporaryDirectory() as empty:
            with self.assertRaises(NoDocumentsError) as caught:
                doc_files([empty, os.path.join(empty, 'missing')])
        self.assertIn('no documents (*.rst) in', str(caught.exception))
