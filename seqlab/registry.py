"""Name registries for the plug-in parts: tasks and heads.

A plug-in registers itself with a decorator in its own module::

    @register_head("crf")
    class CrfHead(TokenHead): ...

Nothing else lists it. A registry imports every module of its package the first time it is asked
for a name, so a new built-in plug-in is one new module; other packages register theirs through
the ``seqlab.plugins`` entry-point group (each entry point names a module to import), and a
script or a test may call the decorator itself.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

ENTRY_POINT_GROUP = "seqlab.plugins"


class Registry(Generic[T]):
    """Plug-ins of one kind by name; built-in ones are found in ``package``."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator registering its class under ``name`` (and setting ``cls.name``)."""
        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj
            return obj
        return add

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        _load_entry_points()

    def get(self, name: str, *, key: str | None = None) -> T:
        """The plug-in called ``name``.

        Raises:
            ConfigError: no such name; the message lists the registered ones (and names the
                config ``key`` when given).
        """
        self._discover()
        if name not in self._items:
            raise ConfigError(f"{key or self.kind}: expected one of {', '.join(self.names())}, "
                              f"got {name!r}")
        return self._items[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._discover()
        return sorted(self._items.items())


_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
