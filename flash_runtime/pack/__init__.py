"""The packer: a project directory in, the artifact the workers boot out.

``flash build`` and ``python -m flash_runtime.pack`` run :func:`build`; ``flash init`` runs
:func:`init_project`. Names are loaded on first use: the discovery child process imports this
package too, and should not pay for rich, pathspec and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["BuildError", "BuildResult", "InitError", "build", "init_project"]

_HOMES = {
    "BuildError": "errors",
    "InitError": "errors",
    "BuildResult": "builder",
    "build": "builder",
    "init_project": "scaffold",
}

if TYPE_CHECKING:
    from .builder import BuildResult, build
    from .errors import BuildError, InitError
    from .scaffold import init_project


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flash_runtime.pack' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
