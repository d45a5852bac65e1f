"""Booting artifacts the way Runpod's official Flash images do (``platform/official.py``).

:func:`environment` makes (once, cached under ``build/``) a virtual environment holding the
images' package set; :class:`OfficialImage` lays out an image's app directory and starts its
queue or load-balanced entry there, with the environment a Runpod worker gets.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..platform import imageenvs, official
from .workers import WorkerProcess


def cache_root() -> Path:
    """Where environments are kept: ``FLASH_TESTING_CACHE``, else ``build/`` of the checkout
    (the current directory's when flash_runtime is installed from elsewhere)."""
    configured = os.environ.get("FLASH_TESTING_CACHE")
    if configured:
        return Path(configured)
    checkout = Path(__file__).resolve().parents[2]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base / "build"


def environment(python: str | None = None) -> Path:
    """The official images' Python environment for Python ``python`` ("3.11"; default this
    interpreter's), its interpreter's path, under :func:`cache_root`."""
    return imageenvs.official_environment(cache_root(), python)


class OfficialImage:
    """One container's worth of the official image: its app directory and its entry."""

    def __init__(self, interpreter: Path, app_dir: Path) -> None:
        self.interpreter = interpreter
        self.app_dir = app_dir
        official.lay_out(app_dir)

    def start(
        self, artifact: Path, resource: str, kind: str, env: dict[str, str], port: int | None = None
    ) -> WorkerProcess:
        """Start the image's entry (``kind``: "qb" or "lb") as the image's CMD does."""
        worker_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))
        }
        worker_env.pop("PYTHONPATH", None)
        worker_env.update(
            FLASH_BUILD_ARTIFACT_PATH=str(artifact),
            FLASH_RESOURCE_NAME=resource,
            RUNPOD_ENDPOINT_ID="ep-official",
            PYTHONUNBUFFERED="1",
            PATH=f"{self.interpreter.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        worker_env.update(env)
        if kind == "lb":
            worker_env["FLASH_ENDPOINT_TYPE"] = "lb"
        command = official.command(self.interpreter, kind, "127.0.0.1", port)
        log_path = self.app_dir.parent / f"{self.app_dir.name}-{resource}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command, cwd=self.app_dir, env=worker_env, stdout=log, stderr=subprocess.STDOUT
            )
        return WorkerProcess(proc, log_path, port)
