"""Image environments: the Python world a worker of the ``process`` backend runs in.

On Runpod a worker runs in its endpoint's image, which holds a known package set and nothing of
the machine that deployed it. Locally, each (image kind, Python version) gets a virtual
environment holding that package set as the packer understands it (``pack/images.py``), made
once with uv under ``FLASH_PLATFORM_IMAGE_ENVS`` (default ``FLASH_HOME/platform/images``):

============== =============================================================================
kind           holds
============== =============================================================================
official-cpu   what Runpod's ``runpod/flash-cpu`` images install (runpod-flash 1.21 and its
               packages); workers enter through the image's own entry (``official.py``)
official-gpu   the same and numpy; torch is the image's, see below
flash-cpu      flash_runtime's worker core (its dependencies at this install's versions) and
               ``images/cpu.txt``; workers run ``python -m flash_runtime.bootstrap``
flash-gpu      the same with ``images/gpu.txt``
sdk-cpu        the Runpod SDK 2.0's runtime images (``runpod/queue``, ``runpod/api``,
               ``runpod/task``; ``py3.X`` tags): the worker core only, since a 2.0 artifact
               carries its packages (``env/``); our bootstrap is the runtime
sdk-gpu        the same ``-gpu`` images, which also hold the torch family the 2.0 deploy
               leaves out of artifacts (borrowed, see below)
sdk-task       ``runpod/task`` (and ``-gpu``): task pods, which get source code and no
               artifact, so the image holds the 2.0 SDK (``SDK_VERSION``) and cloudpickle;
               pods run our task runner (``worker/task.py``, standard library only)
custom         an ``Endpoint(image=...)`` the platform cannot know: the worker core only
============== =============================================================================

The worker core itself (flash_runtime's lower layer) is copied once per source digest into
``core-<digest>/`` and put on ``PYTHONPATH``, so an edit of flash_runtime reaches the next
worker without a new environment.

Packages an image holds that cannot be installed here (CUDA builds of torch, whose index is
not a package registry) are *borrowed* from the platform's own environment when it has them at
the same Python version, and otherwise raise a ``ModuleNotFoundError`` that says so when a
worker imports them. Both are the work of ``_flash_image.py``, which each environment loads at
start through a ``.pth`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..errors import FlashError
from ..pack.images import (
    FLASH_IMAGE_PACKAGES,
    OFFICIAL_REPOSITORY,
    SUPPORTED_PYTHON,
    normalize,
    runtime_dependencies,
)
from ..pack.interpreters import find_interpreter, find_uv

FORMAT = 2
# Image packages no package registry serves in the form the images hold (CUDA or +cpu builds
# of PyTorch come from download.pytorch.org).
UNINSTALLABLE = frozenset({"torch", "torchvision", "torchaudio", "triton"})
_IMAGE = re.compile(r"^(?P<repo>.+)/(?P<name>flash(?:-lb)?(?:-cpu)?):py(?P<python>3\.\d+)(?:-|$)")
_SDK_IMAGE = re.compile(r"^runpod/(?P<kind>queue|api|task)(?P<gpu>-gpu)?:py3\.\d+(?:-|$)")
# The Runpod SDK 2.0 release the task images hold here (the one this platform is tested with).
SDK_VERSION = "2.0.0rc2"
# What the 2.0 deploy leaves out of artifacts for its GPU images (runpod.apps.build).
SDK_GPU_PACKAGES = ("torch", "torchvision", "torchaudio", "triton")
_made = threading.Lock()
KEEP_CORES = 3  # worker core copies kept besides the current one


@dataclass(frozen=True)
class ImageEnv:
    """A made environment: its interpreter and what a worker's environment adds for it."""

    kind: str
    python: str
    interpreter: Path
    pythonpath: tuple[Path, ...] = ()
    missing: tuple[str, ...] = ()  # image packages neither installed nor borrowed
    created_s: float | None = None  # seconds it took to make now; None when it existed

    @property
    def official_entry(self) -> bool:
        """Workers start through the official image's entry, not our bootstrap."""
        return self.kind.startswith("official")

    def worker_env(self, env: dict[str, str]) -> None:
        """Adjust a worker's environment for this image environment."""
        env.pop("PYTHONHOME", None)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in self.pythonpath)
        else:
            env.pop("PYTHONPATH", None)
        env["VIRTUAL_ENV"] = str(self.interpreter.parent.parent)
        env["PATH"] = f"{self.interpreter.parent}{os.pathsep}{env.get('PATH', os.defpath)}"


@dataclass(frozen=True)
class Recipe:
    """What an environment of one kind holds."""

    kind: str
    install: tuple[str, ...]  # requirement lines for uv
    image_only: tuple[str, ...] = ()  # image packages that cannot be installed here
    core: bool = True  # flash_runtime's worker core on PYTHONPATH


def image_kind(image: str) -> str:
    """The kind of environment an endpoint with template image ``image`` runs in."""
    found = _IMAGE.match(image.strip())
    if found is None:
        sdk = _SDK_IMAGE.match(image.strip())
        if sdk is not None:
            if sdk["kind"] == "task":
                return "sdk-task"
            return "sdk-gpu" if sdk["gpu"] else "sdk-cpu"
        return "custom"
    family = "official" if found["repo"] == OFFICIAL_REPOSITORY else "flash"
    return f"{family}-{'cpu' if found['name'].endswith('cpu') else 'gpu'}"


def recipe(kind: str) -> Recipe:
    """The package set of ``kind`` (see the module's table)."""
    from .official import PACKAGES as OFFICIAL

    if kind in ("official-cpu", "official-gpu"):
        gpu = kind == "official-gpu"
        extra: tuple[str, ...] = ("numpy",) if gpu else ()
        return Recipe(kind, (*OFFICIAL, *extra), ("torch",) if gpu else (), core=False)
    core = tuple(_core_pins())
    if kind in ("flash-cpu", "flash-gpu"):
        packages = FLASH_IMAGE_PACKAGES[kind.removeprefix("flash-")]
        installable = tuple(
            f"{name}=={version}" if version else name
            for name, version in sorted(packages.items())
            if name not in UNINSTALLABLE
        )
        image_only = tuple(sorted(n for n in packages if n in UNINSTALLABLE))
        return Recipe(kind, (*core, *installable), image_only)
    if kind in ("custom", "sdk-cpu"):
        return Recipe(kind, core)
    if kind == "sdk-gpu":
        return Recipe(kind, core, SDK_GPU_PACKAGES)
    if kind == "sdk-task":
        return Recipe(kind, (f"runpod=={SDK_VERSION}", "cloudpickle"))
    raise FlashError(f"unknown image environment kind {kind!r}")


def _core_pins() -> list[str]:
    """flash_runtime's worker dependencies at the versions this install runs with (what our
    images install from ``requirements/worker.lock``)."""
    pins = []
    for name in sorted(runtime_dependencies()):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def pythons() -> frozenset[str]:
    """The worker Python versions this machine has interpreters for."""
    return frozenset(v for v in SUPPORTED_PYTHON if find_interpreter(v))


def environment(
    root: Path,
    kind: str,
    python: str,
    *,
    create: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ImageEnv:
    """The environment of ``kind`` for Python ``python`` under ``root``, made first if need be
    (``create``); FlashError saying why when it cannot be."""
    wanted = recipe(kind)
    interpreter_path = find_interpreter(python)
    if interpreter_path is None:
        raise FlashError(
            f"no Python {python} interpreter on this machine for the {kind} image's workers; "
            f"install python{python} (or `uv python install {python}`), or rebuild for "
            f"Python {', '.join(sorted(pythons())) or '(none found)'}"
        )
    key = hashlib.sha256(json.dumps([FORMAT, kind, python, wanted.install]).encode()).hexdigest()[
        :12
    ]
    venv = root / f"{kind}-py{python}-{key}"
    interpreter = venv / "bin" / "python"
    created: float | None = None
    with _made:
        if not (venv / ".complete").is_file():
            if not create:
                raise FlashError(f"the image environment {venv} is gone; save the endpoint again")
            import time

            started = time.perf_counter()
            if progress is not None:
                progress(f"making the {kind} image environment for Python {python} in {venv}")
            _make(venv, interpreter_path, wanted)
            created = round(time.perf_counter() - started, 2)
        pythonpath = (_core_copy(root),) if wanted.core else ()
    return ImageEnv(kind, python, interpreter, pythonpath, _missing(venv), created)


def official_environment(root: Path, python: str | None = None) -> Path:
    """The official images' environment (the ``official-cpu`` kind) for Python ``python``
    ("3.11"; default this interpreter's) under ``root``: its interpreter, made first if need be."""
    version = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    return environment(root, "official-cpu", version).interpreter


def _make(venv: Path, base: str, wanted: Recipe) -> None:
    uv = find_uv()
    if uv is None:
        raise FlashError(
            "image environments are made with uv, which is not installed: "
            "pip install 'flash-runtime[cli]'"
        )
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [uv, "venv", "-q", "--python", base, str(venv)], capture_output=True, text=True
    )
    if made.returncode == 0:
        made = subprocess.run(
            # --compile-bytecode: the images' packages are byte-compiled (pip does it when
            # they are built), so a worker here does not compile fastapi or torch at import.
            [uv, "pip", "install", "-q", "--compile-bytecode", "--python",
             str(venv / "bin" / "python"), *wanted.install],
            capture_output=True,
            text=True,
        )  # fmt: skip
    if made.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise FlashError(
            f"could not make the {wanted.kind} image environment in {venv} (it installs "
            f"{', '.join(wanted.install)} from the package index): {made.stderr.strip()[-800:]}"
        )
    site = _site_packages(venv)
    borrowed, missing = _borrow(wanted.image_only, base)
    (site / "_flash_image.py").write_text(_finder_source(wanted.kind, missing, borrowed))
    (site / "_flash_image.pth").write_text("import _flash_image\n")
    state = {"missing": sorted(missing), "borrowed": sorted(borrowed)}
    (venv / "flash-image.json").write_text(json.dumps(state))
    (venv / ".complete").write_text("ok\n")


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise FlashError(f"the environment {venv} has no site-packages")
    return found[0]


def _missing(venv: Path) -> tuple[str, ...]:
    """The image packages the environment could neither install nor borrow (``_make``)."""
    try:
        state = json.loads((venv / "flash-image.json").read_text())
    except (OSError, ValueError):
        return ()
    return tuple(state.get("missing", ()))


def _borrow(names: Iterable[str], base: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """For each image-only package: the platform environment's copy (its top-level import
    names, with those of everything it requires, and the directory they are in) when it has
    one at the environment's Python; else the message a worker's import of it raises."""
    borrowed: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    same_python = Path(base) == Path(sys.executable)
    for name in names:
        tops = _import_closure(name) if same_python else None
        if tops is None:
            missing[name] = (
                f"{name} is preinstalled in the worker image (a CUDA or CPU build from "
                f"download.pytorch.org), which cannot be installed on this machine's local "
                f"workers; install {name} into the platform's own environment (it is then "
                "borrowed), run the platform with `--workers docker`, or try this on Runpod"
            )
        else:
            borrowed[name] = tops
    return borrowed, missing


def _import_closure(name: str) -> list[str] | None:
    """``dir\0top`` entries for ``name`` and its requirements installed here, or None."""
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    seen: set[str] = set()
    entries: set[str] = set()
    todo = [name]
    while todo:
        current = normalize(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        try:
            dist = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            continue
        base = str(dist.locate_file(""))
        for file in dist.files or []:
            top = file.parts[0]
            if top.endswith((".dist-info", ".data")) or top == "..":
                continue
            entries.add(f"{base}\0{top.removesuffix('.py')}")
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return sorted(entries)


def _finder_source(kind: str, missing: dict[str, str], borrowed: dict[str, list[str]]) -> str:
    roots: dict[str, str] = {}
    for entries in borrowed.values():
        for entry in entries:
            where, top = entry.split("\0")
            roots.setdefault(top, where)
    return f'''"""Written by flash_runtime's local platform for a {kind} image environment: the image's
packages this machine could not install. Borrowed ones are found in the platform's own
environment; missing ones raise ModuleNotFoundError saying why. Loaded by _flash_image.pth."""

import importlib.machinery
import sys

BORROWED = {roots!r}
MISSING = {missing!r}


class _ImageFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is not None:
            return None
        if name in BORROWED:
            return importlib.machinery.PathFinder.find_spec(name, [BORROWED[name]])
        if name in MISSING:
            raise ModuleNotFoundError(MISSING[name], name=name)
        return None


sys.meta_path.append(_ImageFinder)  # last: an artifact's own copy always wins
'''


def _core_copy(root: Path) -> Path:
    """flash_runtime's worker core (and the runpod_flash alias), copied once per digest."""
    from ..pack.core import VENDOR_DIR, core_files

    files = core_files()
    digest = hashlib.sha256()
    for rel, path in files:
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    target = root / f"core-{digest.hexdigest()[:16]}"
    if (target / ".complete").is_file():
        return target
    work = root / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    for rel, path in files:
        dest = work / rel.removeprefix(f"{VENDOR_DIR}/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    (work / ".complete").write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(work, target)
    # Older copies (an edited flash_runtime) go, but for the last few, which workers started
    # before the edit may still be importing from.
    older = sorted(root.glob("core-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in [p for p in older if p != target][KEEP_CORES:]:
        shutil.rmtree(stale, ignore_errors=True)
    return target
