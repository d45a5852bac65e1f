"""Where workers find their app: one extraction directory per artifact, shared by every worker
of it, named by the artifact's hash (so a rebuilt artifact with the same bytes reuses it), and
deleted once nothing uses it."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path


class AppDirs:
    def __init__(self, apps_dir: Path) -> None:
        self.apps_dir = apps_dir
        self._known: dict[tuple[str, int, int], Path] = {}

    async def for_artifact(self, artifact: Path, fallback: str) -> Path:
        """The directory for ``artifact`` (hashed once per file version); ``fallback`` names it
        while the artifact cannot be read (the worker then reports the missing file)."""
        try:
            st = artifact.stat()
        except OSError:
            return self.apps_dir / fallback
        key = (str(artifact), st.st_size, st.st_mtime_ns)
        known = self._known.get(key)
        if known is None:
            digest = await asyncio.to_thread(_sha256_file, artifact)
            known = self._known[key] = self.apps_dir / digest[:16]
        return known

    def collect(self, in_use: set[Path]) -> list[Path]:
        """Deletes the directories under ``apps_dir`` not in ``in_use`` (an endpoint removed,
        or moved to another build, whose workers have exited; the official entry's per-worker
        directories are their workers' own); returns them."""
        try:
            entries = list(self.apps_dir.iterdir())
        except OSError:
            return []
        gone = []
        for path in entries:
            if path.is_dir() and path not in in_use and not path.name.startswith("official-"):
                shutil.rmtree(path, ignore_errors=True)
                gone.append(path)
        return gone


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
