"""Dependencies: merge the requirements, install them flat for the workers' platform, cache them.

* **What**: the project's ``requirements.txt`` (with its ``-r``/``-c`` includes and index
  options) plus each endpoint's ``dependencies=[...]``, de-duplicated in that order. Requirements
  the target image already satisfies (:func:`flash_runtime.pack.images.satisfied_by_image`) and
  those named with ``--exclude`` are left out; one pinned to another version than the image's is
  bundled.
* **How**: ``uv pip install --target`` (uv is a dependency of ours, so it is always there; pip is
  the fallback, and ``FLASH_INSTALLER=uv|pip`` forces one) for Linux x86_64 manylinux wheels and
  the target Python version, binary wheels only (a source build on the developer's machine
  would produce code for the wrong platform). Left-out packages are also kept out of the
  resolution (uv ``--excludes``), so excluding ``torch`` does not download it through a package
  that depends on it; whatever an installer brings in anyway (pip has no such option) is removed
  afterwards, file by file from its ``RECORD``. Console scripts (``bin/``) are dropped: their
  shebangs name the build machine's interpreter.
* **Cache**: one entry per (requirements, Python version, platform, ``--no-deps``, left-out
  set) under ``$FLASH_HOME/cache/deps/<key>``. It keeps the installed tree already written as the
  dependency part of the artifact (:mod:`.tarball`) plus a ``meta.json`` listing the packages and
  their sizes; a build whose requirements did not change installs and compresses nothing.
  Requirements are not re-resolved on a hit: delete the entry (or change the pin) to pick up a
  newer release of an unpinned requirement.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import tarball
from .discover import Discovered
from .errors import BuildError
from .images import (
    PIP_PLATFORMS,
    UV_PLATFORM,
    Provided,
    image_version,
    normalize,
    requirement_name,
    satisfied_by_image,
)
from .interpreters import find_interpreter, find_uv

CACHE_FORMAT = 4
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(.+)$")
_FIND_LINKS = re.compile(r"^(-f|--find-links)(?:\s+|=)(.+)$")


def flash_home() -> Path:
    return Path(os.environ.get("FLASH_HOME") or Path.home() / ".flash").expanduser()


def cache_dir(name: str) -> Path:
    """``$FLASH_CACHE_DIR/<name>``, by default ``$FLASH_HOME/cache/<name>``: the packer's
    caches (installed dependency sets, the vendored core), which several homes may share.
    FLASH_HOME and the cache are created private (700)."""
    explicit = os.environ.get("FLASH_CACHE_DIR", "").strip()
    if explicit:
        root = Path(explicit).expanduser()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return root / name
    home = flash_home()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "cache").mkdir(mode=0o700, exist_ok=True)
    return home / "cache" / name


def cache_root() -> Path:
    return cache_dir("deps")


@dataclass
class Requirements:
    """The merged requirement list and where each requirement came from."""

    install: list[str] = field(default_factory=list)  # requirement and option lines, in order
    sources: dict[str, str] = field(default_factory=dict)  # requirement -> where declared
    left_out: dict[str, str] = field(default_factory=dict)  # requirement -> why not installed
    # requirement -> why it is installed although the image has the package (another version)
    bundled: dict[str, str] = field(default_factory=dict)

    @property
    def requirements(self) -> list[str]:
        """The requirement lines to install (options such as --index-url left out)."""
        return [line for line in self.install if not line.startswith("-")]

    def text(self, project_name: str, *, installed: bool = True) -> str:
        """The ``requirements.txt`` shipped in the artifact."""
        where = "installed in this directory" if installed else "NOT installed (--skip-deps)"
        lines = [
            f"# {project_name}: requirements merged by flash build from requirements.txt and",
            f"# each endpoint's dependencies; {where}.",
            *self.install,
        ]
        if self.left_out:
            lines.append("# Not bundled:")
            lines += [f"#   {req}: {why}" for req, why in self.left_out.items()]
        return "\n".join(lines) + "\n"


def _logical_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Lines of a requirements file with comments stripped and continuations joined."""
    pending, start = "", 0
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield start, line
    if pending.strip():
        yield start, pending.strip()


def _read_requirements(
    path: Path, project_dir: Path, out: list[tuple[str, str]], seen: set[Path]
) -> None:
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    try:
        rel = path.relative_to(project_dir).as_posix()
    except ValueError:
        rel = str(path)
    try:
        lines = list(_logical_lines(path))
    except OSError as err:
        raise BuildError(f"{rel}: cannot read requirements ({err.strerror})") from None
    for number, line in lines:
        include = _INCLUDE.match(line)
        if include:
            flag, target = include.group(1), include.group(2).strip()
            target_path = (path.parent / target).resolve()
            if flag in ("-r", "--requirement"):
                if not target_path.is_file():
                    raise BuildError(f"{rel}:{number}: includes {target}, which does not exist")
                _read_requirements(target_path, project_dir, out, seen)
            else:
                out.append((f"-c {target_path}", f"{rel}:{number}"))
            continue
        links = _FIND_LINKS.match(line)
        if links and "://" not in links.group(2):  # a local directory: relative to this file
            line = f"--find-links {(path.parent / links.group(2).strip()).resolve()}"
        out.append((re.sub(r"\s+", " ", line), f"{rel}:{number}"))


ProvidedFor = Callable[[list[Discovered]], Mapping[str, Provided]]


def merge_requirements(
    project_dir: Path,
    endpoints: list[Discovered],
    provided_for: ProvidedFor,
    excluded: Mapping[str, str] | None = None,
) -> Requirements:
    """requirements.txt plus every endpoint's ``dependencies``, minus what the images satisfy and
    the ``excluded`` names.

    ``provided_for(endpoints)`` is what every image of those endpoints holds. A requirement is
    judged against the images of the endpoints that need it: an endpoint's own ``dependencies``
    against its image, requirements.txt against every endpoint's (see
    :func:`~.images.satisfied_by_image`). So ``dependencies=["torch"]`` on a GPU endpoint is
    left to the GPU image even when the app has CPU endpoints too.
    """
    excluded = excluded or {}
    declared: list[tuple[str, str, Discovered | None]] = []
    req_file = project_dir / "requirements.txt"
    if req_file.is_file():
        found: list[tuple[str, str]] = []
        _read_requirements(req_file, project_dir.resolve(), found, set())
        declared += [(line, source, None) for line, source in found]
    for ep in sorted(endpoints, key=lambda e: e.name):
        for dep in ep.dependencies:
            declared.append(
                (re.sub(r"\s+", " ", dep.strip()), f"endpoint {ep.name!r} ({ep.where})", ep)
            )
    needed_by: dict[str, list[Discovered]] = {}
    for line, _, declarer in declared:
        group = needed_by.setdefault(line, [])
        for member in endpoints if declarer is None else [declarer]:
            if member not in group:
                group.append(member)
    merged = Requirements()
    for line, source, _ in declared:
        if line in merged.sources or line in merged.left_out:
            continue
        name = requirement_name(line) if not line.startswith("-") else None
        if name is not None:
            provided = provided_for(needed_by[line])
            why = excluded.get(name) or satisfied_by_image(line, provided)
            if why is not None:
                merged.left_out[line] = why
                continue
            if name in provided:
                version = image_version(line, provided)
                have = f"{name} {version}" if version else name
                merged.bundled[line] = f"the image has {have}; the artifact's copy wins"
        merged.sources[line] = source
        merged.install.append(line)
    return merged


def pruned_names(
    reqs: Requirements, provided: Mapping[str, Provided], excluded: Mapping[str, str]
) -> dict[str, str]:
    """The distributions kept out of the installed tree, also when another package pulls them
    in: what every image of the app holds (``provided``), what was left out for the endpoints
    that asked for it, and what the user excluded; less what is bundled on purpose."""
    bundled = {requirement_name(line) for line in reqs.bundled}
    out = {name: have.why for name, have in provided.items() if name not in bundled}
    for line, why in reqs.left_out.items():
        name = requirement_name(line)
        if name and name not in bundled:
            out.setdefault(name, why)
    out.update(excluded)
    return out


@dataclass
class Package:
    name: str
    version: str
    size: int  # installed bytes


@dataclass
class Installed:
    """An installed dependency set, as the cache holds it."""

    key: str
    segment: Path  # the dependency part of the artifact (one gzip member)
    tar_length: int  # its uncompressed length
    packages: list[Package]
    size: int  # installed bytes, all files
    files: int
    top_level: list[str]
    installer: str
    pruned: list[str]
    cached: bool
    seconds: float = 0.0

    @property
    def mtime(self) -> int:
        return deps_mtime(self.key)


def deps_mtime(key: str) -> int:
    """The dependency entries' mtime: fixed per dependency set (see :mod:`.tarball`)."""
    base = 1577836800  # 2020-01-01T00:00:00Z
    return base + int(key[:8], 16) % (5 * 365 * 86400)


def cache_key(
    reqs: Requirements, *, python_version: str, no_deps: bool, left_out: Iterable[str]
) -> str:
    material = {
        "format": CACHE_FORMAT,
        "install": reqs.install,
        "python": python_version,
        "platform": UV_PLATFORM,
        "no_deps": no_deps,
        "left_out": sorted(set(left_out)),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


Progress = Callable[[str], None]


def install(
    reqs: Requirements,
    *,
    python_version: str,
    no_deps: bool,
    left_out: Mapping[str, str],
    progress: Progress | None = None,
) -> Installed | None:
    """The installed dependencies for ``reqs``, from the cache or installed now.

    None when there is nothing to install. Raises BuildError with the installer's own message
    when resolution or installation fails.
    """
    if not reqs.requirements:
        return None
    started = time.perf_counter()
    key = cache_key(reqs, python_version=python_version, no_deps=no_deps, left_out=left_out)
    entry = cache_root() / key
    meta_path = entry / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if (entry / "deps.tar.gz").is_file():
                return _from_meta(entry, meta, cached=True, seconds=time.perf_counter() - started)
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry: install again over it
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = entry.parent / f"{key}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        site = work / "site"
        site.mkdir(parents=True)
        installer = run_installer(
            reqs,
            work,
            site,
            python_version=python_version,
            no_deps=no_deps,
            left_out=left_out,
            progress=progress,
        )
        if progress:
            progress("packing the dependencies")
        meta = _finish(site, work, key, installer, left_out, python_version, progress)
        meta["requirements"] = reqs.install
        meta["python_version"] = python_version
        meta["platform"] = UV_PLATFORM
        meta["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        shutil.rmtree(site)
        (work / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if entry.exists():  # damaged, or another build finished the same set first
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(work, entry)
        except OSError:
            if not (entry / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _from_meta(entry, meta, cached=False, seconds=time.perf_counter() - started)


def _from_meta(entry: Path, meta: dict[str, Any], *, cached: bool, seconds: float) -> Installed:
    return Installed(
        key=meta["key"],
        segment=entry / "deps.tar.gz",
        tar_length=meta["tar_length"],
        packages=[Package(p["name"], p["version"], p["size"]) for p in meta["packages"]],
        size=meta["size"],
        files=meta["files"],
        top_level=meta["top_level"],
        installer=meta["installer"],
        pruned=meta["pruned"],
        cached=cached,
        seconds=seconds,
    )


def _have_pip() -> bool:
    import importlib.util

    return importlib.util.find_spec("pip") is not None


def _uv_supports_excludes(uv: str) -> bool:
    try:
        out = subprocess.run(
            [uv, "pip", "install", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--excludes" in out


def _installer_command(
    work: Path, site: Path, *, python_version: str, no_deps: bool, left_out: Iterable[str]
) -> tuple[str, list[str]]:
    choice = os.environ.get("FLASH_INSTALLER", "").strip().lower()
    if choice not in ("", "uv", "pip"):
        raise BuildError(f"FLASH_INSTALLER={choice!r}: use 'uv' or 'pip'")
    uv = find_uv() if choice in ("", "uv") else None
    req_file = work / "requirements.in"
    if uv:
        cmd = [
            uv, "pip", "install", "--target", str(site), "--python", sys.executable,
            "--python-version", python_version, "--python-platform", UV_PLATFORM,
            "--only-binary", ":all:", "-r", str(req_file),
        ]  # fmt: skip
        if _uv_supports_excludes(uv):
            excludes = work / "excludes.txt"
            excludes.write_text("".join(f"{name}\n" for name in sorted(left_out)), encoding="utf-8")
            cmd += ["--excludes", str(excludes)]
        if no_deps:
            cmd.append("--no-deps")
        return "uv", cmd
    if choice == "uv":
        raise BuildError("FLASH_INSTALLER=uv but uv is not installed (pip install uv)")
    if not _have_pip():
        raise BuildError(
            "Neither uv nor pip is available to install dependencies; install uv "
            "(pip install uv) or pip (python -m ensurepip)"
        )
    cmd = [
        sys.executable, "-m", "pip", "install", "--target", str(site),
        "--python-version", python_version, "--implementation", "cp",
        "--only-binary=:all:", "--no-compile", "--disable-pip-version-check", "--no-input",
        "--progress-bar", "off", "-r", str(req_file),
    ]  # fmt: skip
    for platform in PIP_PLATFORMS:
        cmd += ["--platform", platform]
    if no_deps:
        cmd.append("--no-deps")
    return "pip", cmd


def run_installer(
    reqs: Requirements,
    work: Path,
    site: Path,
    *,
    python_version: str,
    no_deps: bool,
    left_out: Mapping[str, str],
    progress: Progress | None,
) -> str:
    (work / "requirements.in").write_text("\n".join(reqs.install) + "\n", encoding="utf-8")
    name, cmd = _installer_command(
        work, site, python_version=python_version, no_deps=no_deps, left_out=left_out
    )
    env = dict(os.environ)
    env.pop("PIP_USER", None)  # --user and --target are exclusive
    env.pop("VIRTUAL_ENV", None)
    output: list[str] = []
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=work, text=True, errors="replace",
        )  # fmt: skip
    except OSError as err:
        raise BuildError(f"Cannot run {name} to install dependencies: {err}") from None
    with proc:  # closes the pipe, waits for the installer
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            output.append(line)
            if progress and line.strip():
                progress(f"{name}: {line.strip()}")
    code = proc.returncode
    if code != 0:
        tail = "\n".join(f"  {line}" for line in output[-40:] if line.strip())
        listed = ", ".join(reqs.requirements)
        raise BuildError(
            f"Installing dependencies with {name} failed (exit code {code}):\n{tail}\n"
            f"Requirements: {listed}\n"
            f"Check the names and versions in requirements.txt and dependencies=[...]. Packages "
            f"must publish wheels for Linux x86_64 (manylinux) and Python {python_version}; "
            "leave out a package the worker image already has with --exclude."
        )
    return name


def compile_bytecode(site: Path, python_version: str) -> bool:
    """Byte-compile the installed packages for the workers' Python, as the image's own
    packages are: a worker's first import of a large library (pandas, scipy) otherwise
    compiles hundreds of modules, seconds of its cold start, on every new worker.

    The ``.pyc`` files are *unchecked-hash* ones: valid whatever the sources' mtimes (the
    artifact gives them the dependency set's date), never re-validated at import, and the same
    bytes for the same sources. Test directories (``test``/``tests`` inside packages) are left
    out: nothing imports them at serving time, and they are a third of a large set's modules.
    Returns False (the artifact then ships sources only, compiled by each worker as it imports
    them) when no Python ``python_version`` runs here.
    """
    interpreter = find_interpreter(python_version)
    if interpreter is None:
        return False
    tests = re.escape(str(site)) + r"/(.*/)?tests?/"
    try:
        # -qq: syntax errors of files no worker imports (vendored Python 2 code) are not ours
        # to report; they stay source-only.
        subprocess.run(
            [
                interpreter,
                "-m",
                "compileall",
                "-qq",
                "-j",
                "0",
                "--invalidation-mode",
                "unchecked-hash",
                "-x",
                tests,
                "-s",
                str(site),
                str(site),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=1800,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(site.rglob("*.pyc"))


def _distribution(dist_info: Path) -> metadata.Distribution:
    return metadata.PathDistribution(dist_info)


def _dist_name(dist_info: Path) -> str:
    name = _distribution(dist_info).metadata["Name"]
    return str(name) if name else dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]


def _dist_version(dist_info: Path) -> str:
    return str(_distribution(dist_info).version or "")


def _record_files(site: Path, dist_info: Path) -> list[Path]:
    """The installed files a distribution's RECORD lists (inside ``site`` only)."""
    listed = _distribution(dist_info).files
    if listed is None:  # no RECORD: everything in its .dist-info
        return [p for p in dist_info.rglob("*") if p.is_file()]
    files = []
    for entry in listed:
        path = (site / str(entry)).resolve()
        if path.is_relative_to(site) and path.is_file():
            files.append(path)
    return files


def _finish(
    site: Path,
    work: Path,
    key: str,
    installer: str,
    left_out: Mapping[str, str],
    python_version: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Prune left-out packages and scripts, byte-compile, measure, and write the dependency
    segment."""
    site = site.resolve()
    shutil.rmtree(site / "bin", ignore_errors=True)
    (site / ".lock").unlink(missing_ok=True)  # uv's lock file for the target directory
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    pruned = []
    for dist_info in sorted(site.glob("*.dist-info")):
        name = _dist_name(dist_info)
        if normalize(name) not in left_out:
            continue
        for path in _record_files(site, dist_info):
            path.unlink(missing_ok=True)
        shutil.rmtree(dist_info, ignore_errors=True)
        pruned.append(normalize(name))
    for directory in sorted(
        (p for p in site.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
    ):
        try:
            directory.rmdir()  # only succeeds when empty
        except OSError:
            pass
    if progress:
        progress(f"byte-compiling the dependencies for Python {python_version}")
    bytecode = compile_bytecode(site, python_version)
    tag = f"cpython-{python_version.replace('.', '')}"
    claimed: dict[Path, str] = {}
    packages = []
    for dist_info in sorted(site.glob("*.dist-info")):
        name = _dist_name(dist_info)
        files = _record_files(site, dist_info)
        size = 0
        for path in files:
            claimed[path] = name
            size += path.stat().st_size
            if bytecode and path.suffix == ".py":
                pyc = path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc"
                if pyc.is_file():
                    claimed[pyc] = name
                    size += pyc.stat().st_size
        packages.append(Package(name, _dist_version(dist_info), size))
    entries = []
    total = 0
    for path in site.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        st = path.stat()
        total += st.st_size
        entries.append(
            tarball.Entry(
                path.relative_to(site).as_posix(),
                path=path,
                size=st.st_size,
                executable=bool(st.st_mode & 0o111),
            )
        )
    unclaimed = sum(e.size for e in entries if e.path not in claimed)
    if unclaimed:
        packages.append(Package("(files of no package)", "", unclaimed))
    packages.sort(key=lambda p: (-p.size, p.name))
    length = tarball.write_segment(
        work / "deps.tar.gz", tarball.with_directories(entries), deps_mtime(key)
    )
    return {
        "key": key,
        "installer": installer,
        "packages": [{"name": p.name, "version": p.version, "size": p.size} for p in packages],
        "size": total,
        "files": len(entries),
        "tar_length": length,
        "top_level": sorted({e.name.split("/")[0] for e in entries}),
        "pruned": sorted(pruned),
        "bytecode": bytecode,
    }
