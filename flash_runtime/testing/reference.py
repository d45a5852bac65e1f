"""The reference implementation, runpod-flash 1.21, in a virtual environment of its own.

Tests run its own CLI against the local platform (``tests/e2e/test_reference_client.py``) and
the benchmarks time it beside ours. :func:`ensure_reference` creates the environment with the
standard library's ``venv`` and ``pip install runpod-flash==1.21.0`` (through uv when it is
installed), once: a marker file
written after a successful install (holding ``pip freeze``) makes later calls reuse it. It uses
the interpreter running this code, so both sides run on the same Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VERSION = "1.21.0"
REQUIREMENT = f"runpod-flash=={VERSION}"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
MARKER = ".reference-complete"


@dataclass(frozen=True)
class ReferenceEnv:
    root: Path
    setup_seconds: float  # 0 when reused
    packages: str  # pip freeze

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def flash(self) -> str:
        return str(self.root / "bin" / "flash")

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with this environment first on PATH, and the reference's CLI told not to
        look for updates on PyPI."""
        env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["FLASH_NO_UPDATE_CHECK"] = "1"
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        return env


def default_root(base: Path) -> Path:
    """Where the environment goes under ``base`` (a cache directory), by version and Python."""
    return base / f"reference-{VERSION}-py{PY}"


def ensure_reference(root: Path, *, refresh: bool = False) -> ReferenceEnv:
    """The reference's environment at ``root``, created (or, with ``refresh``, re-created)
    when it is missing or half made. Raises RuntimeError with pip's output when the install
    fails (it needs PyPI)."""
    marker = root / MARKER
    if refresh and root.exists():
        shutil.rmtree(root)
    if marker.is_file():
        return ReferenceEnv(root, 0.0, marker.read_text())
    if root.exists():
        shutil.rmtree(root)  # a half-made one
    started = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = str(root / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    installer = [*pip, "install", "-q"]
    try:  # uv when it is there (the dev environment has it): the same install, many times faster
        from uv import find_uv_bin

        installer = [str(find_uv_bin()), "pip", "install", "-q", "--python", python]
    except ImportError:
        pass
    installed = subprocess.run([*installer, REQUIREMENT], env=env, capture_output=True, text=True)
    if installed.returncode != 0:
        raise RuntimeError(
            f"pip install {REQUIREMENT} failed:\n{installed.stdout}\n{installed.stderr}"
        )
    freeze = subprocess.run(
        [*pip, "freeze"], env=env, capture_output=True, text=True, check=True
    ).stdout
    marker.write_text(freeze)
    return ReferenceEnv(root, time.perf_counter() - started, freeze)
