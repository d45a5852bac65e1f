"""The reference implementation, runpod-flash 1.21.0, in its own virtual environment.

:func:`ensure_venv` creates ``bench/.cache/reference-<version>-py<X.Y>/`` with the standard
library's ``venv`` and ``pip install runpod-flash==1.21.0`` into it, once: a marker file written
after a successful install makes later runs reuse it (``--refresh-reference`` starts over). The
same interpreter version as ours, so both sides run on identical Python.

That environment stands in for the reference's worker image, whose Python environment holds
runpod-flash, runpod, FastAPI and uvicorn; ``bench/refimage/`` holds the image's two entry
points, reproduced (see its README section in ``bench/README.md``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .common import CACHE, log

VERSION = "1.21.0"
REQUIREMENT = f"runpod-flash=={VERSION}"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class RefEnv:
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
        """``base`` with the reference's CLI told not to look for updates on PyPI."""
        env = dict(base)
        env["FLASH_NO_UPDATE_CHECK"] = "1"
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        return env


def ensure_venv(refresh: bool = False) -> RefEnv:
    root = CACHE / f"reference-{VERSION}-py{PY}"
    marker = root / ".bench-complete"
    if refresh and root.exists():
        shutil.rmtree(root)
    if marker.is_file():
        return RefEnv(root, 0.0, marker.read_text())
    if root.exists():
        shutil.rmtree(root)  # a half-made one
    log(f"creating the reference's environment: {root} (pip install {REQUIREMENT})")
    started = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = str(root / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", REQUIREMENT],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"pip install {REQUIREMENT} failed:\n{result.stdout}\n{result.stderr}")
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--disable-pip-version-check"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seconds = time.perf_counter() - started
    marker.write_text(freeze)
    log(f"reference environment ready in {seconds:.0f}s")
    return RefEnv(root, seconds, freeze)
