"""Indexed gzip: a ``.tar.gz`` whose gzip members say how long they are, so they can be found
without decompressing and decompressed on several cores at once.

The format is plain gzip (RFC 1952): a concatenation of members, which every gzip reader (GNU
``tar``/``gzip``, Python's ``gzip``/``tarfile``, zlib) reads as one stream. Each member holds a
block of at most :data:`BLOCK_SIZE` bytes of the uncompressed stream and carries, in its
header's ``FEXTRA`` field, one subfield (the standard mechanism for private data that readers
skip, as BGZF does for genomics files):

* ``SI1 SI2`` = ``F`` ``L``, ``LEN`` = 8;
* the member's whole length in bytes (header, deflate data and trailer), uint32 little-endian;
* the block's uncompressed length, uint32 little-endian (also the trailer's ``ISIZE``).

A member of a part of the archive that only Runpod's own images use (the worker core vendored
for them, ``pack/core.py``) carries a second, empty subfield, ``SI1 SI2`` = ``F`` ``V``, ``LEN``
= 0. Such parts are whole tar members cut on member boundaries, so a reader asked to
(``skip_image_only``, as our bootstrap does: it runs the core it is installed with) leaves them
out without decompressing them and the stream is still a valid tar; every other reader sees
the whole archive.

:func:`member` writes one such member; :class:`Reader` reads a file of them. The index is a
hint, never trusted: each member is decompressed on its own with zlib, which checks its header,
CRC and length, and it must end exactly where its index said. Where a file has no index (an
artifact from another packer, or from before this format), or from the first member without
one, the rest is decompressed in order, as by any gzip reader.

zlib releases the GIL while it inflates, so threads decompress in parallel; :class:`Reader`
keeps a bounded window of blocks in flight ahead of its consumer. Where the ``isal`` package is
installed (Intel's ISA-L, as in our images), it inflates instead of zlib, about 2.4 times as
fast; ``FLASH_INFLATE=zlib`` says not to use it.
"""

from __future__ import annotations

import collections
import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["BLOCK_SIZE", "MAX_BLOCK_SIZE", "Reader", "member"]

BLOCK_SIZE = 1 << 20  # what the packer writes: 1 MiB of tar stream per member
MAX_BLOCK_SIZE = 16 << 20  # what a reader accepts from an index (bounds memory per block)
_SUBFIELD = b"FL"
_IMAGE_ONLY = b"FV\0\0"  # SI1 SI2 and LEN 0, after the index subfield
_FEXTRA = 0x04
# ID1 ID2 CM FLG MTIME(0) XFL OS(255: unknown) XLEN, then SI1 SI2 LEN total usize
_HEADER = struct.Struct("<BBBBIBBH2sHII")
_TRAILER = struct.Struct("<II")
# A member's length can exceed its block's only by deflate's stored-block overhead (5 bytes per
# 64 KiB) and the header and trailer.
_MAX_MEMBER = MAX_BLOCK_SIZE + (MAX_BLOCK_SIZE >> 10) + 1024
_MIN_PARALLEL = 4  # fewer indexed members than this are decompressed in the calling thread
_CHUNK = 1 << 20


def _inflater(fast: bool = True) -> tuple[Callable[[int], Any], tuple[type[BaseException], ...]]:
    """``decompressobj`` of the fastest inflater here (zlib unless ``fast``), and its errors."""
    if fast and os.environ.get("FLASH_INFLATE", "").strip().lower() != "zlib":
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            error = cast("type[BaseException]", isal_zlib.error)
            return cast("Callable[[int], Any]", isal_zlib.decompressobj), (error,)
    return zlib.decompressobj, (zlib.error,)


def member(data: bytes, level: int, image_only: bool = False) -> bytes:
    """``data`` (at most :data:`MAX_BLOCK_SIZE` bytes) as one indexed gzip member, marked as
    used by Runpod's images only when ``image_only``.

    Deterministic: no timestamp, no name, the "unknown" OS byte, a fixed level.
    """
    if len(data) > MAX_BLOCK_SIZE:
        raise ValueError(f"a block holds at most {MAX_BLOCK_SIZE} bytes, not {len(data)}")
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    xfl = 4 if level == 1 else 2 if level == 9 else 0
    extra = _IMAGE_ONLY if image_only else b""
    total = _HEADER.size + len(extra) + len(body) + _TRAILER.size
    header = _HEADER.pack(
        0x1F, 0x8B, 8, _FEXTRA, 0, xfl, 255, 12 + len(extra), _SUBFIELD, 8, total, len(data)
    )
    return header + extra + body + _TRAILER.pack(zlib.crc32(data), len(data))


def _indexed(header: bytes, offset: int, file_size: int) -> tuple[int, int, bool] | None:
    """(member length, block length, image only) from a member header that carries a sane
    index."""
    if len(header) < _HEADER.size:
        return None
    id1, id2, cm, flg, _, _, _, xlen, si, ln, total, usize = _HEADER.unpack_from(header)
    if (id1, id2, cm, flg, si, ln) != (0x1F, 0x8B, 8, _FEXTRA, _SUBFIELD, 8):
        return None
    if xlen == 12:
        image_only = False
    elif xlen == 12 + len(_IMAGE_ONLY) and header[_HEADER.size :] == _IMAGE_ONLY:
        image_only = True
    else:
        return None
    if total < _HEADER.size + 2 + _TRAILER.size or offset + total > file_size:
        return None
    if total > _MAX_MEMBER:
        return None
    if usize > MAX_BLOCK_SIZE:
        return None
    return total, usize, image_only


class Reader:
    """The decompressed stream of the gzip file open at ``fd``, read in order with ``read``.

    Indexed members are decompressed by ``workers`` threads (none below a few members), up to
    ``2 * workers + 2`` blocks ahead of the reader. ``sha256=True`` also hashes the compressed
    file in a thread (``hexdigest()`` once the stream is read). Raises ``zlib.error`` or
    ``EOFError`` for anything that is not a complete gzip file, as ``gzip`` would.
    ``skip_image_only`` leaves out the members marked as used by Runpod's images only (they
    are neither decompressed nor checked; the hash still covers them).
    """

    def __init__(
        self,
        fd: int,
        *,
        workers: int | None = None,
        sha256: bool = False,
        skip_image_only: bool = False,
    ) -> None:
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._blocks, self._tail = self._scan(skip_image_only)
        # A small file (the template's) inflates in microseconds: zlib, no isal import.
        self._decompressobj, self._errors = _inflater(fast=self._size >= _CHUNK)
        parallel = len(self._blocks) >= _MIN_PARALLEL
        count = workers if workers is not None else _cpus()
        self._pool: ThreadPoolExecutor | None = None
        if parallel and count > 1:
            # Imported here: a small artifact (one block) starts no threads and pays nothing.
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(count, "flash-gunzip")
        self._window = 2 * count + 2
        self._hash: Future[str] | str | None = None
        if sha256:
            self._hash = self._pool.submit(self._sha256) if self._pool else self._sha256()
        self._chunks = self._stream()
        self._buffer = memoryview(b"")

    # -- the reader's interface ---------------------------------------------------------

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            parts = [bytes(self._buffer), *self._chunks]
            self._buffer = memoryview(b"")
            return b"".join(parts)
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buffer = memoryview(chunk)
        out = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return bytes(out)

    def hexdigest(self) -> str:
        assert self._hash is not None, "Reader(sha256=True) hashes the file"
        return self._hash if isinstance(self._hash, str) else self._hash.result()

    def chunks(self) -> Iterator[bytes]:
        """The decompressed stream as the blocks come (the rest of it, after any ``read``)."""
        if self._buffer:
            rest, self._buffer = bytes(self._buffer), memoryview(b"")
            yield rest
        yield from self._chunks

    @property
    def parallel(self) -> bool:
        """Whether blocks are decompressed by threads (an indexed file of several blocks)."""
        return self._pool is not None

    @property
    def members(self) -> int:
        """Indexed members to read, skipped ones left out (0: the file is read as plain
        gzip)."""
        return len(self._blocks)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside -------------------------------------------------------------------------

    def _scan(self, skip_image_only: bool) -> tuple[list[tuple[int, int, int]], int]:
        """The indexed members from the start (offset, length, block length) but those skipped,
        and where the part without an index starts (the file's size when every member has
        one)."""
        blocks: list[tuple[int, int, int]] = []
        offset = 0
        while offset < self._size:
            header = os.pread(self._fd, _HEADER.size + len(_IMAGE_ONLY), offset)
            found = _indexed(header, offset, self._size)
            if found is None:
                break
            length, usize, image_only = found
            if not (image_only and skip_image_only):
                blocks.append((offset, length, usize))
            offset += length
        return blocks, offset

    def _block(self, offset: int, length: int, usize: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        inflate = self._decompressobj(31)
        try:
            out: bytes = inflate.decompress(data, usize + 1)
        except self._errors as err:
            raise zlib.error(f"the gzip member at byte {offset}: {err}") from None
        if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail or len(out) != usize:
            raise zlib.error(
                f"the gzip member at byte {offset} does not match its index "
                f"({length} bytes holding {usize})"
            )
        return out

    def _stream(self) -> Iterator[bytes]:
        if self._pool is None:
            for block in self._blocks:
                yield self._block(*block)
        else:
            pending: collections.deque[Future[bytes]] = collections.deque()
            blocks = iter(self._blocks)
            for block in blocks:
                pending.append(self._pool.submit(self._block, *block))
                if len(pending) >= self._window:
                    break
            while pending:
                out = pending.popleft().result()
                nxt = next(blocks, None)
                if nxt is not None:
                    pending.append(self._pool.submit(self._block, *nxt))
                yield out
        if self._tail < self._size:
            yield from self._plain(self._tail)

    def _plain(self, offset: int) -> Iterator[bytes]:
        """Members without an index, in order, as ``gzip.GzipFile`` reads them (zero padding
        between or after members is skipped; anything else must be a member). Output is cut
        into chunks of at most 1 MiB, so a small member cannot inflate into memory at once."""
        inflate: Any = None  # None between members
        pending = b""  # read, not yet given to a decompressor
        while True:
            if not pending:
                pending = os.pread(self._fd, _CHUNK, offset)
                offset += len(pending)
                if not pending:
                    if inflate is not None:
                        raise EOFError(
                            "Compressed file ended before the end-of-stream marker was reached"
                        )
                    return
            if inflate is None:
                pending = pending.lstrip(b"\0")
                if not pending:
                    continue
                inflate = self._decompressobj(31)
            try:
                out = inflate.decompress(pending, _CHUNK)
            except self._errors as err:
                raise zlib.error(str(err)) from None
            if out:
                yield out
            if inflate.eof:
                pending, inflate = inflate.unused_data, None
            else:
                pending = inflate.unconsumed_tail

    def _sha256(self) -> str:
        digest = hashlib.sha256()
        offset = 0
        while data := os.pread(self._fd, _CHUNK, offset):
            digest.update(data)
            offset += len(data)
        return digest.hexdigest()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
