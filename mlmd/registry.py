"""Registries filled on demand: each built-in entry lives in (and registers from) its own module,
and other distributions add entries through an entry-point group, so nothing is imported before it
is asked for and no list has to be edited to add one."""

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping, Optional


def load_registered(name: str, registry: Mapping[str, Any], builtin_modules: Mapping[str, str],
                    group: Optional[str] = None, register: Optional[Callable[[str, Any], Any]] = None) -> Any:
    """``registry[name]``, after importing the built-in module that registers ``name`` or, failing that,
    handing the entry point ``name`` of ``group`` to ``register(name, loaded)``; None when nothing provides it
    (the caller words the error, with the names it knows)."""
    if name not in registry and name in builtin_modules:
        import_module(builtin_modules[name])
    if name not in registry and group is not None:
        for entry in entry_points(group=group):
            if entry.name == name:
                register(name, entry.load())
    return registry.get(name)
