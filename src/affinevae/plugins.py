"""Plugins: modules of other packages (or the user's own) that register models, likelihoods, readers, ...

A plugin is a module that registers its entries when imported (``@MODELS.register("l1vae")``, see the
README's *Extending*). affinevae imports it

- from an installed package that declares it under the entry-point group :data:`ENTRY_POINT_GROUP`
  (``[project.entry-points."affinevae.plugins"] mymodels = "mypackage.models"`` in its pyproject.toml), or
- from the environment variable :data:`ENV_VAR`, module names separated by commas (``AFFINEVAE_PLUGINS=mymodels``
  with ``mymodels.py`` in the working directory or on the Python path: a lab's own file, not packaged).

The command line loads them before it reads its options (``train --model l1vae`` and ``encode`` of such a run
work), and a registry asked for a name it does not hold loads them once before it says the name is unknown
(so ``affinevae.load`` reads a plugin family's saved model without an import). A plugin that fails to import
is one warning naming it and the error; the rest of affinevae works on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

from .errors import user_stacklevel

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "Plugin", "load_plugins", "loaded_plugins"]

#: The entry-point group an installed package declares its plugin modules under.
ENTRY_POINT_GROUP = "affinevae.plugins"
#: The environment variable naming plugin modules (comma-separated import names).
ENV_VAR = "AFFINEVAE_PLUGINS"


@dataclass(frozen=True)
class Plugin:
    """One plugin module affinevae tried to import.

    Attributes:
        name: the entry point's name, or the module name given in :data:`ENV_VAR`.
        module: the module's import path.
        source: ``"entry point of <distribution>"`` or ``"AFFINEVAE_PLUGINS"``.
        error: None when it imported; else ``"<ExceptionType>: <message>"``.
    """

    name: str
    module: str
    source: str
    error: Optional[str] = None


_loaded: dict[tuple[str, str], Plugin] = {}


@functools.lru_cache(maxsize=1)
def _entry_points() -> tuple[tuple[str, str, str], ...]:
    """(name, module, source) of the installed packages' plugins, sorted by name: read once per process
    (scanning the installed packages' metadata takes milliseconds, and a registry miss asks again)."""
    found = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
        found.append((ep.name, ep.value.partition(":")[0].strip(), f"entry point of {dist}"))
    return tuple(found)


def _declared() -> list[tuple[str, str, str]]:
    """(name, module, source) of every plugin declared now: entry points first (sorted by name), then
    :data:`ENV_VAR`'s modules in their order."""
    found = list(_entry_points())
    for module in os.environ.get(ENV_VAR, "").split(","):
        if module.strip():
            found.append((module.strip(), module.strip(), ENV_VAR))
    return found


def load_plugins() -> list[Plugin]:
    """Import every plugin module declared (entry points of :data:`ENTRY_POINT_GROUP`, then the modules
    :data:`ENV_VAR` names) that was not tried before, each once per process; one warning per plugin that
    fails to import (named, with its error), which stays unloaded (it is not tried again).

    Returns the plugins tried by this call (empty when there were none new)."""
    tried = []
    for name, module, source in _declared():
        if (module, source) in _loaded:
            continue
        try:
            with _working_directory_on_path(source == ENV_VAR):
                importlib.import_module(module)
            plugin = Plugin(name, module, source)
        except Exception as exc:  # a broken plugin must not break affinevae: said, then skipped
            plugin = Plugin(name, module, source, f"{type(exc).__name__}: {exc}".strip())
            warnings.warn(f"plugin '{name}' ({source}, module {module}) did not import ({plugin.error}); "
                          "what it registers is not available", stacklevel=user_stacklevel())
        _loaded[(module, source)] = plugin
        tried.append(plugin)
    return tried


@contextlib.contextmanager
def _working_directory_on_path(wanted: bool):
    """The working directory first on ``sys.path`` while a module :data:`ENV_VAR` names is imported (the
    ``affinevae`` console script, unlike ``python -m``, does not put it there: ``mymodels.py`` beside the
    user would not be found); taken off again after."""
    cwd = os.getcwd()
    if not wanted or cwd in sys.path or "" in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(cwd)


def loaded_plugins() -> list[Plugin]:
    """Every plugin tried in this process so far (see :func:`load_plugins`), in the order tried."""
    return list(_loaded.values())
