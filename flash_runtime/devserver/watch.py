"""Watching the project for changes (``watchfiles``: inotify/FSEvents/ReadDirectoryChangesW).

Changes are grouped: a batch is handed over once nothing more changed for ``STEP_MS`` (an
editor's save is often several events: a temporary file, a rename, a chmod), and at the latest
after ``DEBOUNCE_MS``. The filter drops what never ships: the build output (``.flash/``),
bytecode, VCS and tool directories, editor swap and backup files. The packer's own ignore rules
(``.gitignore``, ``.flashignore``, built-in secrets rules) are applied afterwards, by comparing
the shipped files' fingerprint with the last build's (:func:`shipped_fingerprint`), so a change
to a file that does not ship costs no rebuild.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

STEP_MS = 50
DEBOUNCE_MS = 800
EXTRA_IGNORED_DIRS = (".flash", ".ruff_cache", ".nox", ".ipynb_checkpoints")


async def changes(project: Path, stop: asyncio.Event) -> AsyncGenerator[list[Path], None]:
    """Batches of changed paths under ``project`` until ``stop`` is set."""
    from watchfiles import DefaultFilter, awatch

    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    watch_filter = DefaultFilter(
        ignore_dirs=(*DefaultFilter.ignore_dirs, *EXTRA_IGNORED_DIRS),
        ignore_paths=[str(project / ".flash")],
    )
    async for batch in awatch(
        project,
        watch_filter=watch_filter,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        stop_event=stop,
    ):
        yield sorted({Path(path) for _, path in batch})


def shipped_files(project: Path) -> tuple[str, frozenset[str]]:
    """The fingerprint of the files a build would ship now (the manifest's
    ``source_fingerprint`` of that build), and their project-relative paths."""
    from ..pack import files

    file_set = files.collect_files(project, skip=[project / ".flash"])
    return files.fingerprint(file_set.files), frozenset(f.rel for f in file_set.files)
