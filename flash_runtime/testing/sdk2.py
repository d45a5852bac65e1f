"""The Runpod SDK 2.0 (``runpod.App``, the ``rp`` CLI) in a virtual environment of its own, and
a wheelhouse for its deploys, so that tests and benchmarks drive the real 2.0 client offline.

``rp flash deploy`` vendors the worker's packages (its ``RUNTIME_REQUIREMENTS``, and FastAPI
with uvicorn for apps with api resources) with ``pip install --target env/ --only-binary :all:
--platform manylinux...`` for the workers' Python. :func:`ensure_sdk2` downloads exactly those
wheels once into ``wheels/`` beside the environment (for :data:`WHEEL_PYTHONS`), and :meth:`Sdk2Env.env` points pip at them
(``PIP_NO_INDEX``, ``PIP_FIND_LINKS``): deploys then need no network. Like
``testing/reference.py`` it is made once (a marker file records success), under a file lock, so
``scripts/test`` can prepare it in the background while the suite starts
(``python -m flash_runtime.testing.sdk2 build/``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..platform.imageenvs import SDK_VERSION as VERSION  # the release the platform runs

REQUIREMENT = f"runpod=={VERSION}"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
MARKER = ".sdk2-complete"
# What a project's own dependencies may need besides the SDK's (the fixture apps use none).
EXTRA_WHEELS: tuple[str, ...] = ()
# The workers' Pythons the wheelhouse serves (this one: the platform's process workers', and
# the image the container test boots a 2.0 artifact in).
WHEEL_PYTHONS = (PY,)


@dataclass(frozen=True)
class Sdk2Env:
    root: Path
    setup_seconds: float  # 0 when reused

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    @property
    def rp(self) -> str:
        return str(self.root / "bin" / "rp")

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    def env(
        self, base: Mapping[str, str], platform: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """``base`` with this environment first on PATH and pip offline on the wheelhouse, and
        ``platform``'s settings (``platform/tls.client_environment``: the URLs, key and CA bundle
        that point the 2.0 SDK at a local platform) when given."""
        env = {
            k: v
            for k, v in base.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("RUNPOD_", "FLASH_"))
        }
        env.update(
            PATH=f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            VIRTUAL_ENV=str(self.root),
            PIP_NO_INDEX="1",
            PIP_FIND_LINKS=str(self.wheels),
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_COMPILE="1",
        )
        env.update(platform or {})
        return env


def default_root(base: Path) -> Path:
    return base / f"runpod-sdk-{VERSION}-py{PY}"


def _installer(python: str) -> list[str]:
    try:  # uv when it is there (the dev environment has it): the same install, many times faster
        from uv import find_uv_bin

        return [
            str(find_uv_bin()),
            "pip",
            "install",
            "-q",
            "--prerelease=allow",
            "--python",
            python,
        ]
    except ImportError:
        return [python, "-m", "pip", "install", "-q", "--pre"]


def ensure_sdk2(root: Path) -> Sdk2Env:
    """The 2.0 SDK's environment and wheelhouse at ``root``, made when missing or half made.
    RuntimeError with the installer's output when that fails (it needs PyPI)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = f"{VERSION} wheels for {' '.join(WHEEL_PYTHONS)}"
        if (root / MARKER).is_file() and (root / MARKER).read_text() == stamp:
            return Sdk2Env(root, 0.0)
        if root.exists():
            shutil.rmtree(root)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        python = str(root / "bin" / "python")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        _run([*_installer(python), REQUIREMENT], env)
        # The wheels `rp flash deploy` vendors, as the SDK itself lists them.
        listed = subprocess.run(
            [
                python,
                "-c",
                "import json; from runpod.apps import build as b; print(json.dumps("
                "[list(b.RUNTIME_REQUIREMENTS), list(b.API_RUNTIME_REQUIREMENTS),"
                " list(b.MANYLINUX_PLATFORMS)]))",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runtime, api, platforms = json.loads(listed.stdout)
        for version in WHEEL_PYTHONS:
            download = [
                python,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "-d",
                str(root / "wheels"),
                "--only-binary",
                ":all:",
                "--python-version",
                version,
                "--implementation",
                "cp",
            ]
            for platform in platforms:
                download += ["--platform", platform]
            _run([*download, *runtime, *api, *EXTRA_WHEELS], env)
        (root / MARKER).write_text(stamp)
        return Sdk2Env(root, time.perf_counter() - started)


def build_artifact(project: Path, python: str, cache: Path, sdk: Sdk2Env) -> Path:
    """``project`` as ``rp flash deploy --build-only --python-version PYTHON`` builds it (offline,
    from the wheelhouse), kept under ``cache`` by (its files, the SDK's version, ``python``)."""
    digest = hashlib.sha256(f"{VERSION} {python}".encode())
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes())
    cached = cache / digest.hexdigest()[:16] / "artifact.tar.gz"
    if cached.is_file():
        return cached
    # Built outside any checkout: the SDK's discovery honours the .gitignore files above it.
    scratch = Path(tempfile.mkdtemp(prefix="rp-build-")) / project.name
    shutil.copytree(project, scratch)
    env = sdk.env({"PATH": os.defpath, "HOME": str(scratch)})
    done = subprocess.run(
        [sdk.rp, "flash", "deploy", "--build-only", "--python-version", python],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
    )
    built = list(scratch.glob("*-artifact.tar.gz"))
    if done.returncode != 0 or len(built) != 1:
        raise RuntimeError(f"rp flash deploy --build-only failed:\n{done.stdout}\n{done.stderr}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(built[0], cached)
    shutil.rmtree(scratch.parent, ignore_errors=True)
    return cached


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"making the Runpod SDK {VERSION} environment failed: {' '.join(command[:6])} ...\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )


def main() -> int:
    """``python -m flash_runtime.testing.sdk2 BASE [IMAGE_ENVS [PROJECT...]]``: make the
    environment under ``BASE``; with ``IMAGE_ENVS`` the platform's task-image environment there
    too (what the first ``@app.task`` call would make); with PROJECTs their 2.0 artifacts for
    this Python (:func:`build_artifact`, under ``BASE/sdk2-artifacts``)."""
    base = Path(sys.argv[1] if len(sys.argv) > 1 else "build")
    made = ensure_sdk2(default_root(base))
    print(f"runpod SDK {VERSION}: {made.root} ({made.setup_seconds:.1f}s)")
    if len(sys.argv) > 2:
        from ..platform import imageenvs

        task = imageenvs.environment(Path(sys.argv[2]), "sdk-task", PY)
        print(f"task image environment: {task.interpreter} ({task.created_s or 0:.1f}s)")
    for project in sys.argv[3:]:  # artifacts a test will use, built now (cached)
        print(f"{project}: {build_artifact(Path(project), PY, artifacts_cache(base), made)}")
    return 0


def artifacts_cache(base: Path) -> Path:
    return base / "sdk2-artifacts"


if __name__ == "__main__":
    raise SystemExit(main())
