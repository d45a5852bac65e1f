"""uvicorn's ``Config`` and ``Server`` without the command line that ``import uvicorn`` loads.

``uvicorn/__init__.py`` imports ``uvicorn.main``, its click-based command line, so a plain
``import uvicorn`` costs every worker click's import time and puts a CLI library into a process
that has no use for it. A worker needs only ``uvicorn.config`` and ``uvicorn.server``, which do
not import click. :func:`load` registers the ``uvicorn`` package without running its
``__init__`` and imports those two modules; the first time anything asks the package for a name
it does not yet have (``uvicorn.run``, say, from user code), the real ``__init__`` runs in the
same module object, so the package then is exactly what ``import uvicorn`` would have given.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvicorn import Config, Server


def load() -> tuple[type[Config], type[Server]]:
    """uvicorn's Config and Server classes, click left unimported when it is not already."""
    if "uvicorn" not in sys.modules:
        spec = importlib.util.find_spec("uvicorn")
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        package = importlib.util.module_from_spec(spec)
        loader = spec.loader

        def complete(name: str) -> Any:
            # Run the real __init__ once, then answer as the complete package would.
            if package.__dict__.pop("__getattr__", None) is None:
                raise AttributeError(name)
            loader.exec_module(package)
            return getattr(package, name)

        package.__getattr__ = complete  # type: ignore[method-assign]
        sys.modules["uvicorn"] = package
    package = sys.modules["uvicorn"]
    config = importlib.import_module("uvicorn.config")
    # uvicorn's own modules import these two from the package (``from uvicorn import Config``).
    package.__dict__.setdefault("Config", config.Config)
    server = importlib.import_module("uvicorn.server")
    package.__dict__.setdefault("Server", server.Server)
    return config.Config, server.Server
