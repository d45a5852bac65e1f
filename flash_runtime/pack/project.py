"""Which directory is the project: the working directory, or the project above it.

``flash build``, ``deploy``, ``run``/``dev``, ``logs`` and the app and environment commands work
on the project the working directory belongs to, so they also work from one of its
subdirectories. The project is the nearest directory, from the working directory upwards, that
holds a marker only a Flash project has: ``.flash/flash_manifest.json`` (written by every build)
or ``.flashignore``; the search stops below the home directory and the file system's root. Other
files do not count (a ``pyproject.toml`` or ``requirements.txt`` above may be a monorepo's, whose
whole tree must not become the artifact). Without a marker the working directory is the
project.
"""

from __future__ import annotations

from pathlib import Path

MARKERS = (".flash/flash_manifest.json", ".flashignore")


def find_root(start: Path | None = None) -> Path:
    """The project ``start`` (default: the working directory) belongs to."""
    here = (start or Path.cwd()).resolve()
    home = Path.home().resolve()
    for directory in (here, *here.parents):
        if directory == home or directory.parent == directory:
            break
        if any((directory / marker).is_file() for marker in MARKERS):
            return directory
    return here


def default_app_name(app_name: str | None = None, start: Path | None = None) -> str:
    """``app_name``, else the project directory's name (as ``flash deploy`` names the app)."""
    return app_name or find_root(start).name
