"""The deterministic ``artifact.tar.gz``: same inputs, same bytes.

Determinism: entries are sorted by path; owners are root (uid/gid 0, no names); modes are 0755
for directories and executables and 0644 for other files; mtimes never come from the clock (see
below); headers are POSIX pax with integer fields only; every gzip member has a zero timestamp,
no file name and the "unknown" OS byte, and a fixed compression level.

Layout: the archive is a concatenation of gzip members, which every gzip reader (Python's
``tarfile``/``gzip``, GNU tar, zcat) reads as one stream. Each member is one block of at most
1 MiB of the tar stream with its length in the gzip header (:mod:`flash_runtime.worker.blockgzip`),
so a worker finds the blocks without decompressing and inflates them on all its cores; blocks are
compressed on all the build machine's cores too. The stream has three parts, each starting a new
block: the installed dependencies, written once per dependency set into the dependency cache, so
a code-only rebuild copies them instead of compressing them again; (when the artifact carries
it) flash_runtime's vendored worker core, cached the same way; and the project's files, the
manifest, ``requirements.txt``, the entry files and the end-of-archive marker. Entries are sorted
within each part; the project's part comes last, so should a project file share a path with a
dependency's file, the project's copy is the one extracted.

Mtimes: a fixed timestamp for every entry would make artifacts reproducible but would let a
worker that extracts a new artifact over an old one keep stale bytecode (``.pyc`` files are
checked against the source's mtime and size, and a fixed mtime never changes). So the project's
entries carry the *source date*, the newest mtime among the shipped project files (or
``SOURCE_DATE_EPOCH`` when set, the reproducible-builds convention), and the dependencies' entries
a date derived from their cache key. Both change when their inputs change, never between two
builds of the same inputs.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..worker import blockgzip
from .errors import BuildError

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240
# zlib level 1..9. Level 6 (gzip's default) costs ~2.5x the time of level 1 for ~10% smaller
# output; wheels are mostly already-compressed data and bytecode-free source, so the low level
# loses little. The dependency part is compressed once per dependency set and cached.
PROJECT_LEVEL = 1
DEPS_LEVEL = 1
_COPY = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a file on disk, or bytes."""

    name: str  # posix path, no leading "./" or "/"
    path: Path | None = None
    data: bytes | None = None
    size: int = 0
    executable: bool = False
    is_dir: bool = False


def with_directories(entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` plus an entry for every parent directory, sorted by path components."""
    out = {e.name: e for e in entries}
    for name in list(out):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in out:
                out[parent] = Entry(parent, is_dir=True)
    return sorted(out.values(), key=lambda e: e.name.split("/"))


def _header(entry: Entry, mtime: int) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if entry.executable else 0o644
        info.size = entry.size if entry.data is None else len(entry.data)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _Sink:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class Blocks:
    """A write-only stream compressed into indexed gzip members of :data:`blockgzip.BLOCK_SIZE`
    bytes each, on a few threads (zlib releases the GIL), written to ``sink`` in order.

    Cut at fixed offsets of the stream, so the same bytes always give the same members.
    ``image_only``: every member is marked as used by Runpod's images only (:mod:`blockgzip`).
    """

    def __init__(self, sink: _Sink | BinaryIO, level: int, image_only: bool = False) -> None:
        self.sink = sink
        self.level = level
        self.image_only = image_only
        self.buffer = bytearray()
        self.pending: deque[Future[bytes]] = deque()
        self.pool: ThreadPoolExecutor | None = None
        self.threads = _threads()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buffer += data
        while len(self.buffer) >= blockgzip.BLOCK_SIZE:
            block = bytes(self.buffer[: blockgzip.BLOCK_SIZE])
            del self.buffer[: blockgzip.BLOCK_SIZE]
            self._submit(block)
        return len(data)

    def _submit(self, block: bytes) -> None:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.threads, "flash-pack-gzip")
        self.pending.append(self.pool.submit(blockgzip.member, block, self.level, self.image_only))
        while len(self.pending) > 2 * self.threads:
            self.sink.write(self.pending.popleft().result())

    def close(self) -> None:
        """Compress what is left and write every member; the stream ends here."""
        tail = bytes(self.buffer)
        self.buffer.clear()
        if self.pool is None:  # under one block: no threads
            self.sink.write(blockgzip.member(tail, self.level, self.image_only))
            return
        try:
            if tail:
                self._submit(tail)
            while self.pending:
                self.sink.write(self.pending.popleft().result())
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _threads() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def write_entries(gz: Blocks, entries: Iterable[Entry], mtime: int) -> int:
    """Write tar members (no end marker) into an open block stream; return bytes written."""
    length = 0
    for entry in entries:
        header = _header(entry, mtime)
        gz.write(header)
        length += len(header)
        if entry.is_dir:
            continue
        if entry.data is not None:
            gz.write(entry.data)
            size = len(entry.data)
        else:
            assert entry.path is not None
            size = _copy_file(gz, entry)
        pad = -size % BLOCK
        if pad:
            gz.write(b"\0" * pad)
        length += size + pad
    return length


def _copy_file(gz: Blocks, entry: Entry) -> int:
    assert entry.path is not None
    remaining = entry.size
    with open(entry.path, "rb") as fh:
        while remaining:
            chunk = fh.read(min(_COPY, remaining))
            if not chunk:
                break
            gz.write(chunk)
            remaining -= len(chunk)
        changed = remaining or fh.read(1)
    if changed:
        raise BuildError(f"{entry.name} changed while the artifact was being written; build again")
    return entry.size


def write_segment(
    path: Path,
    entries: list[Entry],
    mtime: int,
    level: int = DEPS_LEVEL,
    *,
    image_only: bool = False,
) -> int:
    """Write ``entries`` as blocks of indexed gzip members to ``path`` (for the dependency
    cache; ``image_only``: the vendored core, marked for readers that skip it)."""
    with open(path, "wb") as raw:
        gz = Blocks(raw, level, image_only)
        length = write_entries(gz, entries, mtime)
        gz.close()
    return length


@dataclass(frozen=True)
class Written:
    path: Path
    sha256: str
    size: int


def write_artifact(
    output: Path,
    project_entries: list[Entry],
    *,
    mtime: int,
    segments: Sequence[tuple[Path, int]] = (),
) -> Written:
    """Write the artifact: the cached members (``segments``: path and uncompressed length; the
    dependencies, the vendored worker core), then the project member and the end marker.

    Written to a temporary file beside ``output`` and renamed, so a failed build never leaves a
    truncated artifact where a good one was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            sink = _Sink(raw)
            length = 0
            for segment, segment_length in segments:
                with open(segment, "rb") as seg:
                    while chunk := seg.read(_COPY):
                        sink.write(chunk)
                length += segment_length
            gz = Blocks(sink, PROJECT_LEVEL)
            length += write_entries(gz, project_entries, mtime)
            end = 2 * BLOCK
            end += -(length + end) % RECORD
            gz.write(b"\0" * end)
            gz.close()
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return Written(output, sink.sha256.hexdigest(), sink.size)
