"""The hand-over from a Runpod Flash image's own entry to flash_runtime's worker.

Runpod's published images start ``python handler.py`` (queue-based) or ``uvicorn lb_handler:app
--host 0.0.0.0 --port 80`` (load-balanced) in ``/app``. Their entry extracts the artifact and
imports ``handler_<resource>.py``, which ``flash build`` wrote (:mod:`flash_runtime.pack.core`);
that file calls :func:`hand_over`:

* **load-balanced**: our worker is served by the image's own uvicorn, in its process. The entry
  file's ``app`` is the FastAPI instance the image requires, whose every request (and the
  lifespan) goes to our worker's lifecycle (``LBWorker.in_image``): ``/ping`` says 204 until
  user code is loaded, which happens in a thread as in our bootstrap. No second interpreter
  starts, and nothing the image has imported is imported again. The image's access log is
  turned off (our request lines are the log; ``FLASH_ACCESS_LOG=1`` keeps it). When the platform
  asks for a separate health port (``PORT_HEALTH``), which the image's server does not listen
  on, the process is replaced as for queue-based workers.
* **queue-based**: the process is replaced (same pid, same container) with ``python -m
  flash_runtime.bootstrap`` on the same interpreter, so jobs run on our job loop rather than
  the image's ``runpod.serverless.start``.

Either way the artifact is already extracted, so the bootstrap does not extract it again
(``FLASH_DISABLE_UNPACK``) and serves from the directory the entry file is in; the vendored
core (its directory and the zip of its pure-Python packages in it, ``core.zip``) comes first on
the path (``PYTHONPATH`` for the new process), so its ``flash_runtime`` and ``runpod_flash`` win
over whatever the image preinstalls (in process, the image's ``runpod_flash``, already imported
by its entry, is dropped from ``sys.modules`` first). A replaced load-balanced worker listens
where the image's uvicorn command was told to listen (``--host``/``--port``, or uvicorn's
``UVICORN_HOST``/``UVICORN_PORT``, or uvicorn's defaults); uvicorn imports the app before it
binds its socket, so the port is free.

Everything the platform gave the worker (``RUNPOD_*``, ``FLASH_*``) is passed on unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

CORE_ZIP = "core.zip"  # flash_runtime.pack.core.CORE_ZIP (the packer is not in the core)
UVICORN_DEFAULT_HOST = "127.0.0.1"
UVICORN_DEFAULT_PORT = 8000


def uvicorn_address(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, int] | None:
    """The host and port a uvicorn command line asks for, or None when ``argv`` is not one."""
    program = os.path.basename(argv[0]) if argv else ""
    if program not in ("uvicorn", "__main__.py") and not program.startswith("uvicorn"):
        return None
    if program == "__main__.py" and "uvicorn" not in argv[0]:
        return None
    host = env.get("UVICORN_HOST") or UVICORN_DEFAULT_HOST
    port_text = env.get("UVICORN_PORT") or str(UVICORN_DEFAULT_PORT)
    args = list(argv[1:])
    for i, arg in enumerate(args):
        for flag in ("--host", "--port"):
            value = None
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            if value is None:
                continue
            if flag == "--host":
                host = value
            else:
                port_text = value
    try:
        port = int(port_text)
    except ValueError:
        port = UVICORN_DEFAULT_PORT
    return host, port


def handover_env(
    resource: str,
    endpoint_type: str,
    app_dir: str,
    core_dir: str,
    *,
    env: Mapping[str, str],
    argv: Sequence[str],
) -> dict[str, str]:
    """The environment the bootstrap is started with in place of the image's entry."""
    out = dict(env)
    path = out.get("PYTHONPATH", "")
    core_zip = os.path.join(core_dir, CORE_ZIP)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (core_dir, core_zip, path) if p)
    out["FLASH_APP_DIR"] = app_dir
    out["FLASH_DISABLE_UNPACK"] = "1"  # the image's entry extracted it
    out["FLASH_RESOURCE_NAME"] = resource
    out["FLASH_ENDPOINT_TYPE"] = endpoint_type
    out["FLASH_ENTRY"] = "official-image"
    if endpoint_type == "lb":
        address = uvicorn_address(argv, env)
        if address is not None:
            out["FLASH_HOST"], port = address[0], address[1]
            out["PORT"] = str(port)
    return out


def serves_in_process(env: Mapping[str, str], argv: Sequence[str]) -> bool:
    """Whether a load-balanced worker can be served by the image's uvicorn (``env``: the
    hand-over's): the image runs uvicorn, and no separate health port is asked for."""
    if uvicorn_address(argv, env) is None or "uvicorn" not in sys.modules:
        return False
    health = env.get("PORT_HEALTH")
    return not health or health == env.get("PORT")


def hand_over(resource: str, endpoint_type: str, app_dir: str, core_dir: str) -> Any:
    """Hand the image's worker over to flash_runtime for ``resource``: returns the ASGI app the
    image's uvicorn is to serve (load-balanced, see the module's docstring), or replaces the
    process and never returns."""
    env = handover_env(resource, endpoint_type, app_dir, core_dir, env=os.environ, argv=sys.argv)
    if endpoint_type == "lb":
        where = f"load-balanced on {env.get('FLASH_HOST', '0.0.0.0')}:{env.get('PORT', '80')}"
        if serves_in_process(env, sys.argv):
            print(
                f"flash_runtime: the image's entry loaded {resource!r}; handing the worker over "
                f"to flash_runtime ({where}, served by the image's uvicorn)",
                file=sys.stderr,
                flush=True,
            )
            return _in_process(env)
    else:
        where = "queue-based"
    print(
        f"flash_runtime: the image's entry loaded {resource!r}; handing the worker over to "
        f"flash_runtime ({where})",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    python = sys.executable or "python3"
    os.execve(python, [python, "-m", "flash_runtime.bootstrap"], env)


def _in_process(env: Mapping[str, str]) -> Any:
    """Our load-balanced worker as an app for the image's uvicorn (``env``: the hand-over's)."""
    import logging
    import time

    started = time.perf_counter()
    os.environ.update(env)  # what our bootstrap would read, and what subprocesses inherit
    # The image's entry imported the reference SDK it preinstalls; user code gets ours.
    for name in [m for m in sys.modules if m == "runpod_flash" or m.startswith("runpod_flash.")]:
        del sys.modules[name]
    from ..envvars import flag
    from .bootstrap import load, setup_logging, unpack
    from .config import WorkerConfig
    from .lb import LBWorker

    config = WorkerConfig.from_env()
    setup_logging(config)
    if not flag(config.env.get("FLASH_ACCESS_LOG")):
        logging.getLogger("uvicorn.access").disabled = True
    return LBWorker(config, lambda: load(config, *unpack(config), started)).in_image()
