"""Name -> class registries (models, CLI commands), instead of if/elif chains."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import AffineVAEError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; ``register`` is a decorator, ``get`` fails with suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the item named ``name`` or raise :class:`AffineVAEError`."""
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name (a list, a dict)
            close = difflib.get_close_matches(name, list(self._items), n=1) if isinstance(name, str) else []
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise AffineVAEError(
                f"unknown {self.kind} '{name}'{hint}; choose from: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Registered names in registration order (e.g. for help listings)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS: Registry = Registry("model")
