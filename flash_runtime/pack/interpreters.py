"""Python interpreters and uv on the build machine: found once, checked to run.

Used by the packer (byte-compiling an artifact's dependencies for the workers' Python) and the
local platform (image environments for each Python a build may target).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys


def find_uv() -> str | None:
    """The uv binary: the ``uv`` package's (a dependency of ours), else one on ``PATH``."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


@functools.cache
def find_interpreter(version: str) -> str | None:
    """A Python ``version`` ("3.12") interpreter on this machine, or None (looked up once)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    found = shutil.which(f"python{version}")
    if found and _runs_as(found, version):
        return found
    uv = find_uv()
    if uv is None:
        return None
    try:
        done = subprocess.run(
            [uv, "python", "find", "--no-project", version],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = done.stdout.strip()
    return path if done.returncode == 0 and path and _runs_as(path, version) else None


def _runs_as(interpreter: str, version: str) -> bool:
    """Whether ``interpreter`` runs and is Python ``version`` (a shim may be neither)."""
    try:
        done = subprocess.run(
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version
