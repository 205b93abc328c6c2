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

DOCS = os.path.normpath(os.path.join(
    os.path.dirname(zasync.__file__), os.pardir, os.pardir, 'docs'))

OPTIONFLAGS = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
               | doctest.REPORT_NDIFF)

CHECKER = zope.testing.renormalizing.RENormalizing([
    # Object addresses differ from run to run.
    (re.compile(r' at 0x[0-9a-fA-F]+>'), ' at 0x...>'),
])

# Documents that need a layer (real servers, processes): name -> layer.
LAYERS = {}


def _scale_out_layers():
    from zasync.processes import ScaleOutLayer
    from zasync.processes import WorkersLayer
    LAYERS['catastrophes.rst'] = WorkersLayer   # a ZEOLayer
    LAYERS['deployment.rst'] = ScaleOutLayer    # ZEO and PostgreSQL


_scale_out_layers()


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


def doc_files():
    return sorted(glob.glob(os.path.join(DOCS, '*.rst')))


def test_suite():
    suite = unittest.TestSuite()
    for path in doc_files():
        doc_suite = doctest.DocFileSuite(
            path, module_relative=False, setUp=setUp, tearDown=tearDown,
            optionflags=OPTIONFLAGS, checker=CHECKER, encoding='utf-8')
        layer = LAYERS.get(os.path.basename(path))
        if layer is not None:
            doc_suite.layer = layer
        suite.addTest(doc_suite)
    return suite
