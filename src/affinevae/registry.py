"""Name -> class registries (models, CLI commands), instead of if/elif chains."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, Generic, Iterator, Optional, TypeVar

from .errors import AffineVAEError
from .plugins import ENV_VAR, load_plugins

T = TypeVar("T")


def _where(obj: object) -> str:
    """``module.QualifiedName`` of a registered class or function (what tells a redefinition)."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class Registry(Generic[T]):
    """A named collection; ``register`` is a decorator, ``get`` fails with suggestions.

    ``on_register(name, obj)``: run on each new entry before it is kept (it may check or complete
    ``obj``, raising :class:`AffineVAEError` to refuse it). ``plugin_hint``: an unknown name's message
    says where plugins come from (for kinds users add by plugin, such as models).

    A name not registered is looked up again after :func:`affinevae.plugins.load_plugins` imports the
    plugins not tried yet."""

    def __init__(self, kind: str, on_register: Optional[Callable[[str, T], None]] = None,
                 plugin_hint: bool = False) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._on_register = on_register
        self._plugin_hint = plugin_hint

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``. The same class or function defined again (a notebook
        cell run twice: the same module and qualified name) replaces the earlier one; anything else under a
        taken name (another definition, or another instance of a class) is refused in one
        :class:`AffineVAEError` line naming both."""

        def deco(obj: T) -> T:
            if not isinstance(name, str) or not name:
                raise AffineVAEError(f"a {self.kind} is registered under a non-empty name, got {name!r}")
            old = self._items.get(name)
            redefined = all(inspect.isclass(v) or inspect.isfunction(v) for v in (old, obj)) and _where(old) == _where(obj)
            if old is not None and old is not obj and not redefined:
                raise AffineVAEError(f"{self.kind} '{name}' is registered already (by {_where(old)}); register "
                                     f"{_where(obj)} under another name")
            if self._on_register is not None:
                self._on_register(name, obj)
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> T:
        """Remove and return the item named ``name`` (a one-line :class:`AffineVAEError` naming the
        registered ones when there is none), e.g. a plugin's entry once a test or notebook is done with it."""
        item = self.get(name)
        del self._items[name]
        return item

    def get(self, name: str) -> T:
        """Return the item named ``name`` or raise :class:`AffineVAEError`."""
        try:
            if name in self:  # (a plugin not imported yet may register it)
                return self._items[name]
        except TypeError:  # an unhashable name (a list, a dict)
            pass
        close = difflib.get_close_matches(name, list(self._items), n=1) if isinstance(name, str) else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        plugin = f" (a plugin's? install its package, or name its module in {ENV_VAR})" if self._plugin_hint else ""
        raise AffineVAEError(f"unknown {self.kind} '{name}'{hint}; choose from: {', '.join(sorted(self._items))}{plugin}")

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Registered names in registration order (e.g. for help listings)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered, after importing the plugins not tried yet when it is not (as :meth:`get`)."""
        if name in self._items:
            return True
        return isinstance(name, str) and bool(load_plugins()) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _model_family(name: str, cls) -> None:
    """A model class's ``family`` is the name it is registered under (what ``model.json`` records and
    ``affinevae.load`` looks up): set where the class inherits its base's, refused where it names another."""
    own = vars(cls).get("family")
    if own is None:  # a subclass of a registered family keeping its base's name would load back as the base
        cls.family = name
    elif own != name:
        raise AffineVAEError(f"model class {cls.__name__} sets family = {own!r} but is registered as '{name}': they must "
                             "be the same (saved models record the family and load by it)")


MODELS: Registry = Registry("model", on_register=_model_family, plugin_hint=True)
