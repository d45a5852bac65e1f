"""The start-up the reference's worker images perform, reproduced without Docker.

The reference (runpod-flash 1.21.0) deploys each endpoint on a ``runpod/flash*`` image built from
the ``runpod-workers/flash`` repository. Its Python environment has runpod-flash, runpod,
FastAPI and uvicorn installed; its working directory is ``/app``, which holds the image's own
modules. The container runs one of two commands:

* load-balanced: ``uvicorn lb_handler:app --host 0.0.0.0 --port 80 --timeout-keep-alive 600``;
* queue-based: ``python handler.py``.

Both modules begin the same way, and this module does what that beginning does, in that order:

1. configure logging (root logger at INFO on stdout);
2. import runpod's logger: the image's unpack module reaches it through its logging adapter,
   so the ``runpod`` package is imported from the image's environment *before* the artifact
   is on ``sys.path``;
3. unpack, when ``RUNPOD_ENDPOINT_ID`` is set with ``FLASH_RESOURCE_NAME`` or
   ``FLASH_ENDPOINT_TYPE`` and ``FLASH_DISABLE_UNPACK`` is not: put the app directory first on
   ``sys.path``, open ``FLASH_BUILD_ARTIFACT_PATH`` with ``tarfile``, resolve every member's
   path and refuse one outside the app directory, then ``extractall``.

Differences, all of them needed to run outside a container: the app directory is
``FLASH_APP_DIR`` instead of the fixed ``/app``, and it is always put first on ``sys.path``
(in the image it already is: it is the working directory of both commands).
"""

from __future__ import annotations

import logging
import os
import sys
import tarfile
from pathlib import Path

log = logging.getLogger("flashref")


def setup_logging() -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-5s | %(message)s"))
        root.addHandler(handler)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def app_dir() -> Path:
    return Path(os.environ.get("FLASH_APP_DIR") or "/app")


def _is_flash_deployment() -> bool:
    typed = os.environ.get("FLASH_ENDPOINT_TYPE") in ("lb", "qb")
    return bool(os.environ.get("RUNPOD_ENDPOINT_ID")) and (
        typed or bool(os.environ.get("FLASH_RESOURCE_NAME"))
    )


def _extract(artifact: Path, target: Path) -> None:
    root = target.resolve()
    with tarfile.open(artifact, mode="r:*") as tar:
        for member in tar.getmembers():
            if not (target / member.name).resolve().is_relative_to(root):
                raise RuntimeError(f"unsafe path in the artifact: {member.name}")
        tar.extractall(path=target)


def start() -> Path:
    """Steps 1-3 above; returns the app directory."""
    setup_logging()
    import runpod.serverless.modules.rp_logger  # noqa: F401 - step 2

    directory = app_dir()
    directory.mkdir(parents=True, exist_ok=True)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    disabled = os.environ.get("FLASH_DISABLE_UNPACK", "").lower() in ("1", "true", "yes")
    if not disabled and _is_flash_deployment():
        artifact = Path(
            os.environ.get("FLASH_BUILD_ARTIFACT_PATH") or "/root/.runpod/artifact.tar.gz"
        )
        log.info("unpacking app from volume")
        _extract(artifact, directory)
        log.info("successfully extracted build artifact to %s", directory)
    return directory


def import_executor_dependencies() -> None:
    """What the image's executor module imports after unpacking.

    Both entry points import the image's ``remote_executor`` (the /execute path of live
    endpoints) once the artifact is on ``sys.path``. That module is the image's, not the
    package's, so it is not here; what it loads is: aiohttp, cloudpickle, and these modules of
    the runpod_flash bundled in the artifact.
    """
    import aiohttp  # noqa: F401
    import cloudpickle  # noqa: F401

    import runpod_flash.core.utils.user_agent
    import runpod_flash.protos.remote_execution

    try:
        import runpod_flash.runtime.service_registry  # noqa: F401
    except ImportError:
        pass


def generated_handler_path(directory: Path) -> Path:
    name = os.environ.get("FLASH_RESOURCE_NAME")
    if not name:
        raise RuntimeError("FLASH_RESOURCE_NAME is not set")
    return directory / f"handler_{name}.py"
