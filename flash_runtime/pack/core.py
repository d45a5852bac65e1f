"""The worker core an artifact carries for images that lack flash_runtime, and the entry files.

Runpod's published Flash images run the reference worker: it extracts the artifact into ``/app``
and loads ``/app/handler_<resource>.py`` (``handler`` for queue images, a FastAPI ``app`` for
load-balanced ones). :func:`entry_file` writes that file for each resource; importing it hands
the process over to flash_runtime's own worker (:mod:`flash_runtime.worker.handover`), which
the artifact carries in :data:`VENDOR_DIR`:

* flash_runtime's worker core (:data:`CORE_MODULES`: the SDK, the manifest, ``worker/``,
  ``calls/``, ``protocol/``) and the ``runpod_flash`` alias, copied from the flash_runtime
  that builds the artifact, so the worker is the version the CLI was tested with;
* the core's third-party packages the official images do not have (:data:`VENDORED`), installed
  for the artifact's Python version and Linux x86_64 like any dependency (offline, this
  environment's own copies serve when it is such a machine), without their ``.dist-info``. The
  images already have aiohttp, uvicorn (with uvloop and httptools) and anyio.

The pure-Python packages among these (ours, starlette, cachetools) travel in one zip,
:data:`CORE_ZIP`, with their bytecode for the workers' Python (the images extract artifacts with
``tarfile``, which pays per member); the compiled ones (msgspec, orjson) as files. The directory
and the zip go first on the worker's ``sys.path``, so our ``runpod_flash`` wins over the
reference SDK the images preinstall. The core is one part of the artifact, cached per (Python
version, core sources, vendored versions) under ``$FLASH_HOME/cache/core``; its gzip members
are marked as for Runpod's images only, so our own bootstrap skips it (``worker/blockgzip.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..manifest import interpreter_version as manifest_python
from ..worker import handover
from . import deps, tarball
from .errors import BuildError
from .images import UV_PLATFORM

VENDOR_DIR = ".flash-worker"
# The core's pure-Python packages (flash_runtime, runpod_flash, starlette, cachetools) in one
# file inside VENDOR_DIR, imported with zipimport; see _zip_pure_packages.
CORE_ZIP = handover.CORE_ZIP
# flash_runtime's worker core: what a worker imports. Everything else (pack, deploy, platform,
# devserver, the CLI) stays with the CLI install.
CORE_MODULES = (
    "__init__.py",
    "bootstrap.py",
    "endpoint.py",
    "errors.py",
    "envvars.py",
    "manifest.py",
    "appmanifest.py",
    "resources.py",
    "legacy.py",
    "py.typed",
    "worker",
    "calls",
    "protocol",
)
ALIAS_PACKAGE = "runpod_flash"
# The core's third-party packages that the official images lack (msgspec, orjson, cachetools),
# and starlette, which they hold only at whatever version their fastapi pins: our router is
# tested with ours. All four are small; msgspec and orjson are compiled, so they are installed
# for the artifact's Python version and platform.
VENDORED = ("msgspec", "orjson", "cachetools", "starlette")
CACHE_FORMAT = 5


@dataclass(frozen=True)
class Core:
    """The vendored core as one gzip member of the artifact."""

    segment: Path
    tar_length: int
    size: int  # bytes installed
    compressed: int  # bytes of the member
    files: int
    cached: bool


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def core_files() -> list[tuple[str, Path]]:
    """(path in the artifact, source file) of flash_runtime's core and the alias package."""
    root = _package_root()
    alias = root.parent / ALIAS_PACKAGE
    out: list[tuple[str, Path]] = []

    def add(base: Path, prefix: str, item: Path) -> None:
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    out.append((f"{prefix}/{path.relative_to(base).as_posix()}", path))
        elif item.is_file():
            out.append((f"{prefix}/{item.relative_to(base).as_posix()}", item))
        else:
            raise BuildError(f"flash_runtime's worker core is incomplete: {item} is missing")

    for name in CORE_MODULES:
        add(root, f"{VENDOR_DIR}/flash_runtime", root / name)
    add(alias, f"{VENDOR_DIR}/{ALIAS_PACKAGE}", alias)
    return out


def vendored_pins() -> list[str]:
    """``name==version`` of :data:`VENDORED`, at the versions this flash_runtime runs with."""
    pins = []
    for name in VENDORED:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise BuildError(
                f"{name} is not installed here, and the artifact's worker core needs it; "
                "reinstall flash_runtime"
            ) from None
    return pins


# What artifacts for Runpod's 1.x images leave out of the core: those artifacts are
# flash_manifest.json ones, never a Runpod SDK 2.0 app's (the second front end's).
OFFICIAL_LEAVES_OUT = ("worker/apps.py", "worker/task.py", "appmanifest.py")


def prepare(python_version: str, progress: Callable[[str], None] | None = None) -> Core:
    """The core member for ``python_version``: from the cache, or installed and packed now."""
    left_out = tuple(f"{VENDOR_DIR}/flash_runtime/{name}" for name in OFFICIAL_LEAVES_OUT)
    sources = [(rel, path) for rel, path in core_files() if rel not in left_out]
    pins = vendored_pins()
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, python_version, UV_PLATFORM, pins]).encode())
    for rel, path in sources:
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    key = digest.hexdigest()[:32]
    entry = deps.cache_dir("core") / key
    meta_path = entry / "meta.json"
    if meta_path.is_file() and (entry / "core.tar.gz").is_file():
        try:
            return _from_meta(entry, json.loads(meta_path.read_text()), cached=True)
        except (OSError, ValueError, KeyError):
            pass  # damaged: build it again
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = entry.parent / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        site = work / "site"
        site.mkdir(parents=True)
        try:
            deps.run_installer(
                deps.Requirements(install=pins), work, site, python_version=python_version,
                no_deps=True, left_out={}, progress=progress,
            )  # fmt: skip
        except BuildError:
            # No index to install from (offline): this environment's own copies serve when it
            # is the workers' kind of machine.
            shutil.rmtree(site)
            site.mkdir()
            if not _copy_installed(site, python_version):
                raise
        # Installer bookkeeping (INSTALLER, RECORD, ...) differs by installer and machine and is
        # never read by the worker: only the packages ship, so the bytes are the same anywhere.
        for dist_info in site.glob("*.dist-info"):
            shutil.rmtree(dist_info)
        shutil.rmtree(site / "bin", ignore_errors=True)
        (site / ".lock").unlink(missing_ok=True)
        for cache in list(site.rglob("__pycache__")):
            shutil.rmtree(cache)
        for rel, path in sources:
            dest = site / rel.removeprefix(f"{VENDOR_DIR}/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
        # Bytecode for the workers' Python: every new worker on an official image would
        # otherwise compile the core (about a tenth of a second) before it answers.
        bytecode = deps.compile_bytecode(site, python_version)
        _zip_pure_packages(site, python_version)
        entries = []
        for path in sorted(site.rglob("*")):
            if path.is_file() and not path.is_symlink():
                rel = f"{VENDOR_DIR}/{path.relative_to(site).as_posix()}"
                entries.append(tarball.Entry(rel, path=path, size=path.stat().st_size))
        # Marked as for Runpod's images only: our bootstrap, which runs the core it is
        # installed with, skips it without decompressing it (worker/blockgzip.py).
        length = tarball.write_segment(
            work / "core.tar.gz",
            tarball.with_directories(entries),
            deps.deps_mtime(key),
            image_only=True,
        )
        meta = {
            "key": key,
            "python_version": python_version,
            "pins": pins,
            "tar_length": length,
            "size": sum(e.size for e in entries),
            "files": len(entries),
            "bytecode": bytecode,
        }
        shutil.rmtree(site)
        (work / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(work, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _from_meta(entry, meta, cached=False)


def _zip_pure_packages(site: Path, python_version: str) -> None:
    """Put the pure-Python packages of ``site`` into :data:`CORE_ZIP`, imported from there.

    The official images extract the artifact with ``tarfile``, at about half a millisecond a
    member: the core's ~230 files cost a worker a tenth of a second before our code runs; the
    zip is one member. Compiled packages (msgspec, orjson: extension modules cannot be imported
    from a zip) stay files. ``zipimport`` looks for ``module.pyc`` beside ``module.py`` (not in
    ``__pycache__``), so the bytecode moves there; the sources stay, for tracebacks. Entries are
    sorted, with fixed dates and modes, so the same inputs give the same bytes.
    """
    tag = f".cpython-{python_version.replace('.', '')}.pyc"
    pure = sorted(
        top
        for top in site.iterdir()
        if top.is_dir() and not any(p.suffix in (".so", ".pyd") for p in top.rglob("*"))
    )
    members: dict[str, Path] = {}
    for top in pure:
        for path in top.rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(site)
            if path.parent.name == "__pycache__":
                if not path.name.endswith(tag):
                    continue
                rel = rel.parent.parent / (path.name.removesuffix(tag) + ".pyc")
            members[rel.as_posix()] = path
    with zipfile.ZipFile(site / CORE_ZIP, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix, whatever the build machine
            zf.writestr(info, members[name].read_bytes())
    for top in pure:
        shutil.rmtree(top)


def _copy_installed(site: Path, python_version: str) -> bool:
    """Copy :data:`VENDORED` from this environment when it is the workers' kind of machine.

    The fallback of an offline build: the installed files are what an install for this Python
    version on Linux x86_64 gives, though possibly from another of the wheels published for it.
    False when this machine is of another kind, or a distribution's files cannot all be found.
    """
    if (
        manifest_python() != python_version
        or sys.platform != "linux"
        or platform.machine() != "x86_64"
    ):
        return False
    copies: list[tuple[Path, Path]] = []
    for name in VENDORED:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return False
        base = Path(str(dist.locate_file(""))).resolve()
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file))).resolve()
            if "__pycache__" in file.parts or not source.is_relative_to(base):
                continue  # bytecode, console scripts
            if not source.is_file():
                return False
            copies.append((source, site / source.relative_to(base)))
    for source, dest in copies:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    return True


def _from_meta(entry: Path, meta: dict[str, object], *, cached: bool) -> Core:
    segment = entry / "core.tar.gz"
    return Core(
        segment=segment,
        tar_length=int(str(meta["tar_length"])),
        size=int(str(meta["size"])),
        compressed=segment.stat().st_size,
        files=int(str(meta["files"])),
        cached=cached,
    )


def entry_name(resource: str) -> str:
    """The entry file the official images load for ``resource``."""
    return f"handler_{resource}.py"


def entry_file(resource: str, endpoint_type: str) -> bytes:
    """``handler_<resource>.py``: hands the official image's worker over to flash_runtime."""
    kind = "load-balanced" if endpoint_type == "lb" else "queue-based"
    return f'''"""Entry file of endpoint {resource!r} ({kind}), written by flash build.

Runpod's runpod/flash* images load this file after extracting the artifact. It hands the
worker over to flash_runtime, which the artifact carries in {VENDOR_DIR}/ (see
flash_runtime.worker.handover): a load-balanced one is served by the image's uvicorn as `app`,
a queue-based one replaces the process (it defines no `handler`).
"""

import os
import sys

_app_dir = os.path.dirname(os.path.abspath(__file__))
_core = os.path.join(_app_dir, {VENDOR_DIR!r})
if not os.path.isfile(os.path.join(_core, {CORE_ZIP!r})):
    raise RuntimeError(
        "this artifact was built for flash_runtime's own images (image_target 'flash'), which "
        "run `python -m flash_runtime.bootstrap`; to run it on Runpod's runpod/flash* images, "
        "build it without an image repository (unset FLASH_IMAGE_REPOSITORY)"
    )
sys.path[:0] = [_core, os.path.join(_core, {CORE_ZIP!r})]
for _name in [m for m in sys.modules if m == "flash_runtime" or m.startswith("flash_runtime.")]:
    del sys.modules[_name]

from flash_runtime.worker.handover import hand_over  # noqa: E402

app = hand_over({resource!r}, {endpoint_type!r}, _app_dir, _core)
'''.encode()
