"""Runpod's official Flash images (``runpod/flash*``), as the platform runs them: the images'
Python environment, and their entry (``official_image/``: ``python handler.py`` for queue-based
workers, ``uvicorn lb_handler:app`` for load-balanced ones, which extract the artifact into the
app directory and load its ``handler_<resource>.py``).

Artifacts that flash_runtime did not build (runpod-flash's own, with its SDK inside and nothing
of ours) run this way, as on Runpod: their code expects the image's packages (runpod-flash's
dependencies among them), which the platform's own environment does not have.
That environment (its package set is :data:`PACKAGES`) is made once per Python by ``imageenvs.py``
(:func:`~.imageenvs.official_environment`), under ``FLASH_PLATFORM_IMAGE_ENVS`` or
``FLASH_HOME/platform/images``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ENTRIES = Path(__file__).parent / "official_image"

# What runpod-workers/flash's pyproject.toml installs into every image (runpod-flash at the
# version our benchmarks compare against); the GPU images add torch, which is not installed here.
PACKAGES = [
    "aiohttp",
    "cloudpickle",
    "pydantic",
    "requests",
    "runpod",
    "hf_transfer",
    "huggingface_hub",
    "fastapi",
    "uvicorn[standard]",
    "runpod-flash==1.21.0",
]


def lay_out(app_dir: Path) -> None:
    """An image's app directory (``/app``): its entry files, where the artifact is extracted."""
    app_dir.mkdir(parents=True, exist_ok=True)
    for entry in ENTRIES.glob("*.py"):
        shutil.copy(entry, app_dir / entry.name)


def command(
    interpreter: Path, kind: str, host: str, port: int | None, *, keyed: bool = False
) -> list[str]:
    """The image's CMD for a worker of ``kind`` ("qb" or "lb"); ``keyed``: the load-balanced
    entry behind ``platform_lb.py``, which answers only requests carrying the worker's key."""
    if kind == "lb":
        assert port is not None
        uvicorn = str(interpreter.parent / "uvicorn")
        entry = "platform_lb:app" if keyed else "lb_handler:app"
        return [uvicorn, entry, "--host", host, "--port", str(port),
                "--timeout-keep-alive", "600"]  # fmt: skip
    return [str(interpreter), "handler.py"]
