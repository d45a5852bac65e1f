"""The reference's load-balanced worker: what ``uvicorn lb_handler:app`` does in its image.

Serve with ``python -m uvicorn flashref_lb:app --app-dir bench/refimage ...`` in the reference's
environment, with ``FLASH_ENDPOINT_TYPE=lb``, ``FLASH_RESOURCE_NAME``, ``RUNPOD_ENDPOINT_ID``,
``FLASH_BUILD_ARTIFACT_PATH`` and ``FLASH_APP_DIR``. In order, as the image's module does:
import FastAPI, start (logging, runpod's logger, unpack: see :mod:`flashref_image`), import
what the image's executor needs, then load ``handler_<resource>.py`` (the FastAPI app
``flash build`` generated) from the app directory as module ``user_main`` and serve its
``app``, adding ``GET /ping`` if it has none.
"""

from __future__ import annotations

import importlib.util
import os

import flashref_image
from fastapi import FastAPI

_dir = flashref_image.start()
flashref_image.import_executor_dependencies()

if os.environ.get("FLASH_ENDPOINT_TYPE") != "lb":
    raise RuntimeError("this entry serves load-balanced endpoints only (FLASH_ENDPOINT_TYPE=lb)")

_path = flashref_image.generated_handler_path(_dir)
_spec = importlib.util.spec_from_file_location("user_main", _path)
if _spec is None or _spec.loader is None:
    raise ImportError(f"cannot load {_path}")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
app = _module.app
if not isinstance(app, FastAPI):
    raise TypeError(f"{_path}: app is a {type(app).__name__}, not a FastAPI app")
if not any(getattr(route, "path", None) == "/ping" for route in app.routes):

    @app.get("/ping")
    async def _ping() -> dict[str, str]:
        return {"status": "healthy", "endpoint": "lb"}
