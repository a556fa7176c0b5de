"""Transports: one package per wire protocol, each a thin adapter over the same call.

A transport is a folder here whose `__init__.py` exports `TRANSPORT` (a `TransportSpec`); nothing
else in the server names it. Modules at this level (`phone`, `paced`, `options`, `spec`) are
shared by several transports and are not transports themselves.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from kombain.server.transports.spec import TransportSpec

__all__ = ["TransportSpec", "discover"]


@functools.cache
def discover() -> tuple[TransportSpec, ...]:
    """Every transport package's spec, in package-name order."""
    specs = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "TRANSPORT", None)
        if not isinstance(spec, TransportSpec):
            raise TypeError(f"{module.__name__} exports no TRANSPORT = TransportSpec(...)")
        specs.append(spec)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two transports share a name: {names}")
    return tuple(specs)
