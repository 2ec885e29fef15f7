"""Ships the top-level ``agents/``, ``policies/`` and ``training/`` folders inside the package.

Everything else about the distribution is in ``pyproject.toml``. Users read and edit these
folders at the top of the checkout; a wheel installed outside it finds them as
``orchestra/_bundled/<kind>/`` (see ``orchestra/_paths.py``). The sdist carries the folders
(``MANIFEST.in``), so a wheel built from the sdist, as ``python -m build`` does, has them too.
An editable install copies nothing: the package then reads the checkout's folders directly.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
BUNDLED = ("agents", "policies", "training")


class build_py_with_bundled(build_py):
    """``build_py`` whose package data also holds ``<kind>/**`` as ``orchestra/_bundled/<kind>``."""

    def _get_data_files(self):  # type: ignore[no-untyped-def]
        # setuptools copies, lists (get_outputs) and records every (package, src_dir,
        # build_dir, filenames) entry of data_files; adding ours here covers all three.
        files = list(super()._get_data_files())
        for kind in BUNDLED:
            src = os.path.join(ROOT, kind)
            names = []
            for dirpath, dirnames, filenames in os.walk(src):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                names += [os.path.relpath(os.path.join(dirpath, f), src) for f in sorted(filenames)
                          if not f.endswith((".pyc", ".pyo"))]
            build_dir = os.path.join(self.build_lib, "orchestra", "_bundled", kind)
            files.append((f"orchestra._bundled.{kind}", src, build_dir, names))
        return files


setup(cmdclass={"build_py": build_py_with_bundled})
