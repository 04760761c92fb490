"""Extension points found by module: every module of a package that defines a spec attribute
(`PARADIGM`, `METHOD`) registers it under the spec's `name`; nothing else is edited."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any


def discover(package: str, path: Iterable[str], attr: str) -> dict[str, Any]:
    """`attr` of each module of `package` (its `__path__`) that has one, by the spec's `name`."""
    found = {}
    for info in pkgutil.iter_modules(path):
        spec = getattr(importlib.import_module(f"{package}.{info.name}"), attr, None)
        if spec is not None:
            found[spec.name] = spec
    return found
