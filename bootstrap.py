#!/usr/bin/env python3
"""Set up a zasync development environment.

Creates a virtual environment in ``.venv/``, installs zc.buildout into it
and runs buildout, which generates ``bin/test``, ``bin/zasync`` and
``bin/runzeo``.  Running it again is safe and quick: an existing
environment is reused and buildout only installs what changed.
"""
import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, '.venv')
BUILDOUT_REQUIREMENT = 'zc.buildout >= 3.0'


def venv_python():
    return os.path.join(VENV, 'bin', 'python')


def run(*cmd):
    print('bootstrap:', ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=HERE)


def main():
    if sys.version_info < (3, 10):
        sys.exit('zasync needs Python 3.10 or newer, not %s' % sys.version.split()[0])
    if not os.path.exists(venv_python()):
        venv.EnvBuilder(with_pip=True).create(VENV)
    buildout = os.path.join(VENV, 'bin', 'buildout')
    if not os.path.exists(buildout):
        run(venv_python(), '-m', 'pip', 'install', '--quiet',
            '--disable-pip-version-check', BUILDOUT_REQUIREMENT, 'wheel')
    run(buildout, '-c', os.path.join(HERE, 'buildout.cfg'))


if __name__ == '__main__':
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit('bootstrap failed: %s exited with status %s'
                 % (' '.join(e.cmd), e.returncode))
