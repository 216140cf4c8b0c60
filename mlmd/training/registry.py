"""Name -> class registries of the training package (objectives, strategies)."""

from typing import Any, Dict


def register_in(registry: Dict[str, Any], name: str):
    """Class decorator: ``registry[name] = cls``, and ``cls.name = name``."""

    def decorate(cls):
        registry[name] = cls
        cls.name = name
        return cls

    return decorate
