"""The hand-over from a Runpod Flash image's own entry to flash_runtime's worker.

Runpod's published images start ``python handler.py`` (queue-based) or ``uvicorn lb_handler:app
--host 0.0.0.0 --port 80`` (load-balanced) in ``/app``. Their entry extracts the artifact and
imports ``handler_<resource>.py``, which ``flash build`` wrote (:mod:`flash_runtime.pack.core`);
that file calls :func:`hand_over`, which replaces the process (same pid, same container) with
``python -m flash_runtime.bootstrap`` on the same interpreter:

* the artifact is already extracted, so the bootstrap does not extract it again
  (``FLASH_DISABLE_UNPACK``) and serves from the directory the entry file is in;
* the vendored core (its directory and the zip of its pure-Python packages in it,
  ``core.zip``) goes first on ``PYTHONPATH``, so its ``flash_runtime`` and ``runpod_flash`` win
  over whatever the image preinstalls;
* a load-balanced worker listens where the image's uvicorn command was told to listen
  (``--host``/``--port``, or uvicorn's ``UVICORN_HOST``/``UVICORN_PORT``, or uvicorn's defaults);
  uvicorn imports the app before it binds its socket, so the port is free.

Everything the platform gave the worker (``RUNPOD_*``, ``FLASH_*``) is passed on unchanged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

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


def hand_over(resource: str, endpoint_type: str, app_dir: str, core_dir: str) -> None:
    """Replace this process with flash_runtime's worker for ``resource``; never returns."""
    env = handover_env(resource, endpoint_type, app_dir, core_dir, env=os.environ, argv=sys.argv)
    if endpoint_type == "lb":
        where = f"load-balanced on {env.get('FLASH_HOST', '0.0.0.0')}:{env.get('PORT', '80')}"
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
