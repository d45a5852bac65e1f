"""``flash build``: project directory in, ``.flash/artifact.tar.gz`` and the manifest out.

Steps: collect the shipped files (:mod:`.files`), discover the endpoints (:mod:`.discover`),
validate them and write the manifest (:mod:`.assemble`), install the dependencies through the
cache (:mod:`.deps`), write the deterministic tarball (:mod:`.tarball`), check its size.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .. import manifest as manifest_mod
from ..envvars import number
from . import assemble, core, deps, discover, files, images, tarball
from .errors import BuildError

if TYPE_CHECKING:
    from rich.console import Console

    from ..manifest import Manifest

DEFAULT_MAX_MB = 500.0
# Below this much installed data per MB of limit, compression cannot bring an artifact under
# the limit, so the build stops before spending time compressing it.
_HOPELESS_RATIO = 4.0


@dataclass
class BuildResult:
    """What a build produced."""

    artifact: Path
    manifest_path: Path
    manifest: Manifest
    sha256: str
    size: int  # bytes of the artifact
    files: int  # project files shipped
    seconds: float
    python_version: str = ""
    requirements: list[str] = field(default_factory=list)  # installed requirement lines
    left_out: dict[str, str] = field(default_factory=dict)  # requirement -> why not bundled
    packages: list[deps.Package] = field(default_factory=list)  # installed distributions
    deps_cached: bool | None = None  # None: nothing installed
    deps_installer: str | None = None
    deps_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    image_target: str = "official"
    bundled: dict[str, str] = field(
        default_factory=dict
    )  # requirement -> why, though the image has it
    core_bytes: int = 0  # compressed bytes of the vendored worker core (0: not vendored)

    def summary(self) -> dict[str, object]:
        """JSON-able description (``flash build --json``)."""
        return {
            "artifact": str(self.artifact),
            "manifest": str(self.manifest_path),
            "sha256": self.sha256,
            "size": self.size,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "python_version": self.python_version,
            "endpoints": {
                name: {
                    "type": res.endpoint_type,
                    "gpu": res.is_gpu,
                    "functions": [f.name for f in res.functions],
                }
                for name, res in self.manifest.resources.items()
            },
            "requirements": self.requirements,
            "left_out": self.left_out,
            "packages": [{"name": p.name, "version": p.version} for p in self.packages],
            "deps_cached": self.deps_cached,
            "warnings": self.warnings,
            "image_target": self.image_target,
            "bundled": self.bundled,
            "core_bytes": self.core_bytes,
        }


def max_artifact_bytes() -> int:
    mb = number(
        os.environ, "FLASH_MAX_ARTIFACT_MB", DEFAULT_MAX_MB, positive=True, unit="megabytes",
        error=BuildError,
    )  # fmt: skip
    return int(mb * 1024 * 1024)


def target_python(python_version: str | None) -> str:
    """The X.Y the artifact is for: ``python_version`` or this interpreter's."""
    if python_version is None:
        version = manifest_mod.interpreter_version()
        if version not in images.SUPPORTED_PYTHON:
            raise BuildError(
                f"this interpreter is Python {version}, and there are worker images for Python "
                f"{', '.join(images.SUPPORTED_PYTHON)} only; choose one with --python-version"
            )
        return version
    version = python_version.strip()
    if version.startswith(("py", "python")):
        version = version.removeprefix("python").removeprefix("py")
    if not re.fullmatch(r"3\.\d+", version):
        raise BuildError(
            f"--python-version {python_version!r}: give a major.minor version such as 3.12"
        )
    if version not in images.SUPPORTED_PYTHON:
        raise BuildError(
            f"--python-version {version}: there are worker images for Python "
            f"{', '.join(images.SUPPORTED_PYTHON)}"
        )
    return version


def split_excludes(exclude: Sequence[str]) -> dict[str, str]:
    """``["a,b", "c"]`` -> normalised names mapped to the reason they are left out."""
    out = {}
    for item in exclude:
        for name in item.split(","):
            if name.strip():
                out[images.normalize(name.strip())] = "--exclude"
    return out


FIXED_EPOCH = 315532800  # 1980-01-01T00:00:00Z: the time of a build that has none of its own


def source_epoch(project: Path) -> int:
    """The build's timestamp, a function of the sources and never of the clock or of file
    mtimes, so the same sources give the same bytes whenever they are built (``touch`` or a
    fresh checkout changes nothing): ``SOURCE_DATE_EPOCH`` when set (the reproducible-builds
    convention), else the committer time of the project's git ``HEAD`` when it is in a git
    work tree, else 1980-01-01. ``generated_at`` and every tar entry use it."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if raw.isdigit():
        return int(raw)
    git = shutil.which("git")
    if git is not None:
        try:
            done = subprocess.run(
                [git, "-C", str(project), "log", "-1", "--format=%ct"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip().isdigit():
            return int(done.stdout.strip())
    return FIXED_EPOCH


class _Report:
    """Progress and summary on a rich console; silent without one."""

    def __init__(self, console: Console | None) -> None:
        self.console = console

    @contextmanager
    def step(self, text: str) -> Iterator[Callable[[str], None]]:
        if self.console is None:
            yield lambda _line: None
            return
        started = time.perf_counter()
        from rich.markup import escape

        with self.console.status(f"{escape(text)}…") as status:

            def update(line: str) -> None:
                elapsed = time.perf_counter() - started
                status.update(f"{escape(text)} [dim]{elapsed:.0f}s · {escape(line[:90])}[/dim]")

            yield update

    def done(self, text: str) -> None:
        if self.console is not None:
            from rich.markup import escape

            self.console.print(f"[green]✓[/green] {escape(text)}")

    def warn(self, text: str) -> None:
        if self.console is not None:
            from rich.markup import escape

            self.console.print(f"[yellow]![/yellow] {escape(text)}")


def build(
    project_dir: Path,
    *,
    output: Path | None = None,
    exclude: Sequence[str] = (),
    no_deps: bool = False,
    skip_deps: bool = False,
    python_version: str | None = None,
    image_repository: str | None = None,
    console: Console | None = None,
) -> BuildResult:
    """Build ``project_dir`` into ``.flash/artifact.tar.gz`` (or ``output``).

    Also writes ``.flash/flash_manifest.json``. ``skip_deps`` installs no dependencies at all;
    ``no_deps`` installs the listed requirements without their dependencies.
    ``image_repository`` (default ``FLASH_IMAGE_REPOSITORY``) targets flash_runtime's own images
    published there; without one the artifact is for Runpod's official images. Raises BuildError
    (a FlashError) with a message for the user on every expected failure.
    """
    started = time.perf_counter()
    report = _Report(console)
    project = Path(project_dir).resolve()
    if not project.is_dir():
        raise BuildError(f"{project_dir}: not a directory")
    version = target_python(python_version)
    target = images.ImageTarget.choose(image_repository)
    flash_dir = project / ".flash"
    artifact = (Path(output) if output is not None else flash_dir / "artifact.tar.gz").resolve()
    manifest_path = flash_dir / manifest_mod.MANIFEST_NAME
    user_excludes = split_excludes(exclude)

    file_set = files.collect_files(project, skip=[artifact])
    warnings = list(file_set.warnings)
    if file_set.withheld:
        shown = ", ".join(file_set.withheld[:8]) + (" ..." if len(file_set.withheld) > 8 else "")
        warnings.append(
            f"kept out {len(file_set.withheld)} file(s) that look like credentials (no ignore "
            f"rule ships them): {shown}"
        )
    for w in warnings:
        report.warn(w)
    py_files = [f for f in file_set.files if f.rel.endswith(".py")]

    with report.step("Discovering endpoints"):
        endpoints = discover.discover(project, file_set.files)
        assemble.validate(endpoints, project_dir=project, scanned=len(py_files))
    sources = {f.rel: f.path.read_text(encoding="utf-8", errors="replace") for f in py_files}
    epoch = source_epoch(project)
    manifest = assemble.build_manifest(
        endpoints,
        project_name=project.name,
        python_version=version,
        generated_at=datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source_fingerprint=_fingerprint(file_set),
        sources=sources,
        target=target,
    )
    manifest_bytes = manifest_mod.dumps(manifest)
    report.done(_endpoints_line(manifest))

    def provided_for(group: list[discover.Discovered]) -> dict[str, images.Provided]:
        kinds = {"gpu" if ep.is_gpu else "cpu" for ep in group if not ep.has_image}
        custom = any(ep.has_image for ep in group)
        return images.image_provided(target, kinds, custom_image=custom)

    custom_image = any(ep.has_image for ep in endpoints)
    reqs = deps.merge_requirements(project, endpoints, provided_for, user_excludes)
    left_out = deps.pruned_names(reqs, provided_for(endpoints), user_excludes)
    installed: deps.Installed | None = None
    if skip_deps:
        if reqs.requirements:
            report.warn(f"Dependencies not installed (skip_deps): {', '.join(reqs.requirements)}")
    elif reqs.requirements:
        label = f"Installing {len(reqs.requirements)} requirement(s) for Python {version}, {images.PLATFORM_LABEL}"
        with report.step(label) as progress:
            installed = deps.install(
                reqs, python_version=version, no_deps=no_deps, left_out=left_out, progress=progress
            )
        if installed is not None:
            real = sorted(p.name for p in installed.packages if p.version)
            how = (
                f"{len(real)} package(s) from the cache"
                if installed.cached
                else f"Installed {len(real)} package(s) with {installed.installer}"
            )
            shown = ", ".join(real[:8]) + (", …" if len(real) > 8 else "")
            report.done(f"{how} in {installed.seconds:.1f}s ({_mb(installed.size)}): {shown}")
    for req, why in reqs.bundled.items():
        report.done(f"Bundled: {req} ({why})")
    vendored: core.Core | None = None
    if target.vendors_core or custom_image:
        with report.step(f"Vendoring the worker core for Python {version}") as progress:
            vendored = core.prepare(version, progress)
        report.done(
            f"Worker core in {core.VENDOR_DIR}/ ({_mb(vendored.compressed)} compressed"
            f"{', cached' if vendored.cached else ''}): the artifact boots on Runpod's images"
        )
    for req, why in reqs.left_out.items():
        report.done(f"Not bundled: {req} ({why})")

    limit = max_artifact_bytes()
    deps_size = installed.size if installed else 0
    if deps_size + file_set.size > _HOPELESS_RATIO * limit:
        raise BuildError(
            _too_large(deps_size + file_set.size, limit, installed, file_set, estimated=True)
        )

    shipped = [f for f in file_set.files if f.rel != "requirements.txt"]
    if installed is not None:
        collisions = sorted({f.rel.split("/")[0] for f in shipped} & set(installed.top_level))
        for name in collisions:
            msg = f"{name}: the project and its dependencies both have it; the project's copy wins"
            warnings.append(msg)
            report.warn(msg)
    entries = [
        tarball.Entry(f.rel, path=f.path, size=f.size, executable=f.executable) for f in shipped
    ]
    shipped_names = {f.rel for f in shipped}
    for name, res in manifest.resources.items():
        entry_name = core.entry_name(name)
        if entry_name in shipped_names:
            raise BuildError(
                f"{entry_name}: flash build writes this file (the entry Runpod's images load for "
                f"endpoint {name!r}); rename the project's file"
            )
        entries.append(tarball.Entry(entry_name, data=core.entry_file(name, res.endpoint_type)))
    if any(f.rel.split("/")[0] == core.VENDOR_DIR for f in shipped):
        raise BuildError(f"{core.VENDOR_DIR}/: flash build writes this directory; rename yours")
    segments = [(installed.segment, installed.tar_length)] if installed else []
    if vendored is not None:
        segments.append((vendored.segment, vendored.tar_length))
    entries.append(tarball.Entry(manifest_mod.MANIFEST_NAME, data=manifest_bytes))
    requirements_txt = reqs.text(project.name, installed=not skip_deps)
    entries.append(tarball.Entry("requirements.txt", data=requirements_txt.encode()))
    try:
        with report.step("Writing the artifact"):
            written = tarball.write_artifact(
                artifact,
                tarball.with_directories(entries),
                mtime=epoch,
                segments=segments,
            )
        if written.size > limit:
            artifact.unlink(missing_ok=True)
            raise BuildError(_too_large(written.size, limit, installed, file_set, estimated=False))
        flash_dir.mkdir(parents=True, exist_ok=True)
        manifest_path.write_bytes(manifest_bytes)
    except OSError as err:
        where = err.filename or artifact
        raise BuildError(f"Cannot write the build output ({where}): {err.strerror or err}") from err

    result = BuildResult(
        artifact=artifact,
        manifest_path=manifest_path,
        manifest=manifest,
        sha256=written.sha256,
        size=written.size,
        files=len(shipped),
        seconds=time.perf_counter() - started,
        python_version=version,
        requirements=reqs.requirements,
        left_out=dict(reqs.left_out),
        packages=[p for p in installed.packages if p.version] if installed else [],
        deps_cached=installed.cached if installed else None,
        deps_installer=installed.installer if installed else None,
        deps_seconds=installed.seconds if installed else 0.0,
        warnings=warnings,
        image_target=target.kind,
        bundled=dict(reqs.bundled),
        core_bytes=vendored.compressed if vendored else 0,
    )
    if console is not None:
        _print_summary(console, result, project, skip_deps)
    return result


def _fingerprint(file_set: files.FileSet) -> str:
    try:
        return files.fingerprint(file_set.files)
    except OSError as err:
        raise BuildError(f"Cannot read {err.filename}: {err.strerror or err}") from err


def _mb(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _too_large(
    size: int,
    limit: int,
    installed: deps.Installed | None,
    file_set: files.FileSet,
    *,
    estimated: bool,
) -> str:
    what = "The installed files come to" if estimated else "The artifact is"
    limit_mb = f"{limit / 1024 / 1024:.2f}".rstrip("0").rstrip(".")
    lines = [f"{what} {_mb(size)}, over the {limit_mb} MB artifact limit (FLASH_MAX_ARTIFACT_MB)."]
    sizes: list[tuple[int, str]] = []
    if installed is not None:
        sizes += [(p.size, p.name) for p in installed.packages]
    top: dict[str, int] = {}
    for f in file_set.files:
        top_name = f.rel.split("/")[0]
        top[top_name] = top.get(top_name, 0) + f.size
    sizes += [(s, f"{name} (project)") for name, s in top.items()]
    sizes.sort(key=lambda item: (-item[0], item[1]))
    lines.append("Largest packages and project entries (installed size):")
    lines += [f"  {_mb(s):>10}  {name}" for s, name in sizes[:10]]
    packages = [
        name for s, name in sizes[:10] if not name.endswith("(project)") and "(" not in name
    ]
    example = ",".join(packages[:2]) or "PACKAGE"
    lines.append(
        f"Leave out packages the worker image already provides with --exclude, e.g. "
        f"`flash build --exclude {example}`, move large data to a network volume, or add "
        "ignore rules (.gitignore, .flashignore) for project files that need not ship."
    )
    return "\n".join(lines)


def _endpoints_line(manifest: Manifest) -> str:
    qb = [r for r in manifest.resources.values() if not r.is_load_balanced]
    lb = [r for r in manifest.resources.values() if r.is_load_balanced]
    parts = []
    if qb:
        parts.append(f"{len(qb)} queue-based")
    if lb:
        routes = sum(len(r.functions) for r in lb)
        parts.append(f"{len(lb)} load-balanced ({routes} route{'s' if routes != 1 else ''})")
    total = len(manifest.resources)
    return f"Found {total} endpoint{'s' if total != 1 else ''}: {', '.join(parts)}"


def _print_summary(console: Console, result: BuildResult, project: Path, skip_deps: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("endpoint")
    table.add_column("type")
    table.add_column("hardware")
    table.add_column("serves")
    for name, res in result.manifest.resources.items():
        kind = "load-balanced" if res.is_load_balanced else "queue-based"
        hardware = "GPU" if res.is_gpu else "CPU"
        if res.is_load_balanced:
            serves = ", ".join(f"{f.http_method} {f.http_path}" for f in res.functions)
        else:
            serves = ", ".join(f"{f.name}()" for f in res.functions)
        table.add_row(escape(name), kind, hardware, escape(serves))
    console.print(table)
    try:
        shown = result.artifact.relative_to(Path.cwd())
    except ValueError:
        shown = result.artifact
    if skip_deps:
        dep_text = "not installed (skip_deps)"
    elif result.deps_cached is None:
        dep_text = "none to install"
    else:
        dep_text = f"{len(result.packages)} package(s)" + (
            " (cached)" if result.deps_cached else f" (installed with {result.deps_installer})"
        )
    console.print(
        f"[green bold]Built[/green bold] {escape(project.name)} in {result.seconds:.2f}s: "
        f"{escape(str(shown))}  [dim]{_mb(result.size)} · {result.files} files · "
        f"dependencies {dep_text} · Python {result.python_version} · "
        f"sha256 {result.sha256[:12]}[/dim]"
    )
