"""Name registries for every plug-in kind: tasks, heads, losses, input readers, named datasets.

A plug-in registers itself with a decorator in its own module::

    @register_head("crf")
    class CrfHead(TokenHead): ...

Nothing else lists it. A registry imports every module of its package (if it has one) the first
time it is asked for a name, so a new built-in plug-in is one new module; other packages
register theirs through the ``seqlab.plugins`` entry-point group (each entry point names a module
to import, which calls the decorators: ``register_loss``, ``register_head``, ``register_task``,
``register_reader``, ``register_dataset``), and a script or a test may call a decorator itself.
A registry reads as a mapping from names to plug-ins.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

ENTRY_POINT_GROUP = "seqlab.plugins"


_MISSING = object()


class Registry(Mapping, Generic[T]):
    """Plug-ins of one kind by name; built-in ones are found in ``package`` (None: they register
    where they are defined)."""

    def __init__(self, kind: str, package: str | None):
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str, *, check: Callable[[T], None] | None = None
                 ) -> Callable[[T], T]:
        """A decorator registering its object under ``name`` (and setting its ``name``);
        ``check`` may refuse it (a contract it does not meet) with a ``TypeError``."""
        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if check is not None:
                check(obj)
            if getattr(obj, "name", None) != name:
                obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj
            return obj
        return add

    def add(self, obj: T) -> T:
        """Register ``obj`` under its own ``name`` (a named dataset's spec)."""
        return self.register(obj.name)(obj)  # type: ignore[attr-defined]

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        if self.package is not None:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        _load_entry_points()

    def get(self, name: str, default=_MISSING, *, key: str | None = None) -> T:
        """The plug-in called ``name`` (``default`` when given and there is none).

        Raises:
            ConfigError: no such name and no default; the message lists the registered ones
                (and names the config ``key`` when given).
        """
        self._discover()
        if name not in self._items:
            if default is not _MISSING:
                return default
            raise ConfigError(f"{key or self.kind}: expected one of {', '.join(self.names())}, "
                              f"got {name!r}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        self._discover()
        return self._items[name]

    def __contains__(self, name) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(sorted(self._items))

    def __len__(self) -> int:
        self._discover()
        return len(self._items)

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
