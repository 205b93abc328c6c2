"""The rules that hold the package's layout.

- The engine (every module but the command, ``zasync.cli``, and the test
  support, ``zasync.testing``, ``zasync.ftesting`` and ``zasync.tests``)
  never imports the command or the test support.
- No import cycles between the modules of ``src/zasync``, counting the
  imports inside functions too.
- No module uses another module's private name (``from zasync.x import
  _y``, ``x._y``).
- The core install (no Zope packages, no ZEO, no RelStorage) imports the
  engine and the command.
- Every class that declares an interface provides it (``verifyClass``),
  and the main objects pass ``verifyObject``.

The source is read with ``ast``: nothing here depends on what happens to
be imported already.
"""
import ast
import os
import subprocess
import sys
import tempfile
import unittest
import uuid

import zope.interface
import zope.interface.verify

import zasync
from zasync.testing.servers import subprocess_env

PACKAGE_DIR = os.path.dirname(os.path.abspath(zasync.__file__))

#: not the engine: the command and the test support
OUTSIDE_ENGINE = ('zasync.cli', 'zasync.testing', 'zasync.ftesting',
                  'zasync.tests', 'zasync.__main__')
FORBIDDEN_IN_ENGINE = ('zasync.cli', 'zasync.testing')


def module_names():
    """``{dotted module name: path}`` for every module of the package."""
    found = {}
    for directory, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        relative = os.path.relpath(directory, PACKAGE_DIR)
        parts = ['zasync'] + ([] if relative == '.' else
                              relative.split(os.sep))
        for name in files:
            if not name.endswith('.py'):
                continue
            base = name[:-3]
            dotted = '.'.join(parts if base == '__init__'
                              else parts + [base])
            found[dotted] = os.path.join(directory, name)
    return found


MODULES = module_names()


def in_package(name, prefixes):
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def imports(path, module):
    """``(line, imported module, names)`` for every import statement in the
    file (at any depth), resolved to modules of the package where a name
    is a module."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith('__init__.py') else \
        module.rpartition('.')[0]
    result = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                result.append((node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                parts = parts[:len(parts) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            for alias in node.names:
                candidate = '%s.%s' % (base, alias.name)
                if candidate in MODULES:
                    result.append((node.lineno, candidate, ()))
                else:
                    result.append((node.lineno, base, (alias.name,)))
    return result


def internal_graph(skip=('zasync.tests',)):
    """``{module: {imported package modules}}``, tests left out."""
    graph = {}
    for module, path in MODULES.items():
        if in_package(module, skip):
            continue
        edges = set()
        for line, target, names in imports(path, module):
            if target in MODULES and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph):
    """A list of modules forming a cycle, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack = []

    def visit(node):
        color[node] = GREY
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if color.get(target, BLACK) == GREY:
                return stack[stack.index(target):] + [target]
            if color.get(target) == WHITE:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(graph):
        if color[node] == WHITE:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


class LayeringTests(unittest.TestCase):

    def engine_violations(self):
        problems = []
        for module, path in sorted(MODULES.items()):
            if in_package(module, OUTSIDE_ENGINE):
                continue
            for line, target, names in imports(path, module):
                if in_package(target, FORBIDDEN_IN_ENGINE) or (
                        target == 'zasync' and set(names) & {'cli',
                                                             'testing'}):
                    problems.append('%s:%d imports %s' % (
                        os.path.relpath(path, PACKAGE_DIR), line,
                        '.'.join((target,) + tuple(names))))
        return problems

    def test_engine_never_imports_the_command_or_the_test_support(self):
        self.assertEqual(self.engine_violations(), [])

    def test_the_rule_sees_engine_modules(self):
        # (A rule that checks nothing cannot fail.)
        engine = [m for m in MODULES if not in_package(m, OUTSIDE_ENGINE)]
        for expected in ('zasync.job', 'zasync.queue', 'zasync.dispatcher',
                         'zasync.worker', 'zasync.inspection',
                         'zasync.web.app', 'zasync.web.metrics'):
            self.assertIn(expected, engine)
        self.assertIn(('zasync.cli.common',),
                      [(t,) for _, t, _ in imports(
                          MODULES['zasync.cli.worker'], 'zasync.cli.worker')])

    def test_no_import_cycles(self):
        self.assertIsNone(find_cycle(internal_graph()))

    def test_cycle_finder_finds_cycles(self):
        self.assertEqual(find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}),
                         ['a', 'b', 'c', 'a'])
        self.assertIsNone(find_cycle({'a': {'b'}, 'b': set()}))

    def test_no_private_names_of_other_modules(self):
        problems = []
        for module, path in sorted(MODULES.items()):
            if in_package(module, ('zasync.tests',)):
                continue
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            aliases = {}   # local name -> package module
            for line, target, names in imports(path, module):
                if names and target.startswith('zasync'):
                    for name in names:
                        if name.startswith('_') and not name.startswith(
                                '__'):
                            problems.append('%s:%d imports %s.%s' % (
                                module, line, target, name))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        dotted = '%s.%s' % (node.module, alias.name)
                        if dotted in MODULES:
                            aliases[alias.asname or alias.name] = dotted
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname and alias.name in MODULES:
                            aliases[alias.asname] = alias.name
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute)
                        and isinstance(node.value, ast.Name)
                        and node.value.id in aliases
                        and aliases[node.value.id] != module
                        and node.attr.startswith('_')
                        and not node.attr.startswith('__')):
                    problems.append('%s:%d uses %s.%s' % (
                        module, node.lineno, aliases[node.value.id],
                        node.attr))
        self.assertEqual(problems, [])

    def test_public_modules_declare_all(self):
        missing = []
        for module in ('zasync.job', 'zasync.queue', 'zasync.agent',
                       'zasync.dispatcher', 'zasync.local', 'zasync.utils',
                       'zasync.failure', 'zasync.retry', 'zasync.worker',
                       'zasync.inspection', 'zasync.instanceuuid',
                       'zasync.subscribers', 'zasync.manager',
                       'zasync.runner', 'zasync.background',
                       'zasync.testing', 'zasync.cli', 'zasync.actions',
                       'zasync.web', 'zasync.web.app', 'zasync.web.auth',
                       'zasync.web.data', 'zasync.web.metrics',
                       'zasync.web.views', 'zasync.cli.web'):
            mod = __import__(module, fromlist=['_'])
            names = getattr(mod, '__all__', None)
            if names is None:
                missing.append(module)
                continue
            for name in names:
                self.assertTrue(hasattr(mod, name), '%s.%s' % (module, name))
        self.assertEqual(missing, [])


class CoreInstallTests(unittest.TestCase):
    """The engine and the command import without the ``zope``, ``zeo`` and
    ``relstorage`` extras (their packages made unimportable)."""

    BLOCKED = ('zope.configuration', 'zope.app', 'zope.security',
               'zope.processlifetime', 'zope.container', 'zope.publisher',
               'zope.traversing', 'zope.site', 'zope.authentication',
               'grokcore', 'ZConfig', 'ZEO', 'relstorage')

    def test_core_modules_import_without_the_extras(self):
        script = '''
import sys

BLOCKED = %r


class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            raise ImportError('blocked: ' + name)
        return None


sys.meta_path.insert(0, Block())
import zasync.agent, zasync.cli, zasync.dispatcher, zasync.inspection
import zasync.job, zasync.local, zasync.queue, zasync.worker
zasync.cli.build_parser()
loaded = sorted(m for m in sys.modules
                if any(m == b or m.startswith(b + '.') for b in BLOCKED))
print('loaded:', loaded)
''' % (self.BLOCKED,)
        with tempfile.TemporaryDirectory() as directory:
            result = subprocess.run(
                [sys.executable, '-c', script], cwd=directory,
                env=subprocess_env(), capture_output=True, text=True,
                timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), 'loaded: []')


def declaring_classes():
    """Every class defined in the package's modules (not the tests) that
    declares interfaces itself, with those interfaces."""
    found = []
    for module in sorted(MODULES):
        if in_package(module, ('zasync.tests', 'zasync.__main__',
                               'zasync.cli.__main__')):
            continue
        mod = __import__(module, fromlist=['_'])
        for value in vars(mod).values():
            if (isinstance(value, type) and value.__module__ == module):
                declared = list(zope.interface.implementedBy(value)
                                .declared)
                if declared:
                    found.append((value, declared))
    return found


class InterfaceTests(unittest.TestCase):

    def test_every_declaring_class_provides_its_interfaces(self):
        classes = declaring_classes()
        self.assertGreater(len(classes), 20)
        problems = []
        for cls, interfaces in classes:
            for iface in interfaces:
                try:
                    zope.interface.verify.verifyClass(iface, cls)
                except zope.interface.Invalid as e:
                    problems.append('%s.%s: %s' % (
                        cls.__module__, cls.__qualname__, e))
        self.assertEqual(problems, [])

    def test_main_objects_provide_their_interfaces(self):
        import datetime

        from zasync import interfaces
        from zasync.agent import Agent
        from zasync.failure import Failure
        from zasync.job import Job
        from zasync.queue import Queue
        from zasync.queue import Queues
        from zasync.testing import ManualClock
        from zasync.testing import Reactor
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        for iface, obj in [
                (interfaces.IJob, Job(datetime.datetime.now)),
                (interfaces.IQueue, Queue()),
                (interfaces.IQueues, Queues()),
                (interfaces.IAgent, Agent()),
                (interfaces.IFailure, failure),
                (interfaces.IClock, ManualClock()),
                (interfaces.IReactor, Reactor()),
                (interfaces.IUUID, uuid.uuid4())]:
            self.assertTrue(zope.interface.verify.verifyObject(iface, obj),
                            iface)
