"""Installs the in-memory `synapse` compatibility package on `sys.meta_path`.

Presenced serves a small `synapse` package from sources compiled into its binary, so that
presence router modules written for the reference homeserver import unchanged. The finder
comes first on `sys.meta_path`, so it wins over a real `synapse` that may be installed in the
same environment: a module must see Presenced's `ModuleApi`, never the homeserver's.
"""

import importlib.abc
import importlib.util
import sys


class ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the modules of the compatibility package from memory."""

    presenced_shim = True

    def __init__(self, sources):
        # dotted name -> (is_package, source text)
        self._sources = dict(sources)

    def _filename(self, fullname):
        path = fullname.replace(".", "/")
        if self._sources[fullname][0]:
            path += "/__init__"
        return "<presenced>/" + path + ".py"

    def find_spec(self, fullname, path=None, target=None):
        entry = self._sources.get(fullname)
        if entry is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, self, origin=self._filename(fullname), is_package=entry[0]
        )

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        code = compile(self._sources[name][1], self._filename(name), "exec")
        exec(code, module.__dict__)

    def get_source(self, fullname):
        # Lets tracebacks through the shim show their source lines.
        entry = self._sources.get(fullname)
        return None if entry is None else entry[1]


def install(sources):
    """Puts the finder first on `sys.meta_path`, once per process."""
    for finder in sys.meta_path:
        if getattr(finder, "presenced_shim", False):
            return
    sys.meta_path.insert(0, ShimFinder(sources))
