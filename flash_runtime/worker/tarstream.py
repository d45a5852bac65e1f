"""A one-pass reader of a tar stream that hands out members' data without copying it.

``tarfile``'s streaming mode costs a worker most of its extraction time in Python: every header
goes through several layers of buffering and field parsing, and every byte of data is copied
three times before it reaches a file. This reader parses the formats ``flash build``, GNU tar
and Python's ``tarfile`` write (ustar, POSIX pax with ``path``/``linkpath``/``size``/``mtime``
records, global pax headers, GNU long names and link names) straight from the decompressed
blocks and returns each member's data as views into them, which a writer thread then hands to
``os.writev``.

It trusts nothing: a header with a bad checksum, a number that is not one, a truncated header or
member, or a stream that stops without the end-of-archive block is :class:`CorruptArchive`; every
byte it consumes is counted against a bound the caller raises as it accepts members
(:class:`Overflow` beyond it), so metadata no member declares (pax records, long names) cannot
inflate without limit. Deciding whether a member may be written is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["BLOCK", "CorruptArchive", "Member", "Overflow", "TarStream"]

BLOCK = 512
_ZERO = bytes(BLOCK)
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"
REGULAR = frozenset(b"07\0")  # regular file, contiguous file (a regular file), old regular
DIRECTORY, HARDLINK, SYMLINK = ord("5"), ord("1"), ord("2")
CHARDEV, BLOCKDEV, FIFO = ord("3"), ord("4"), ord("6")
_PAX, _GLOBAL_PAX, _LONGNAME, _LONGLINK = ord("x"), ord("g"), ord("L"), ord("K")


class CorruptArchive(Exception):
    """The tar stream is broken or truncated."""


class Overflow(Exception):
    """More bytes than the caller's bound allows (a decompression or metadata bomb)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} bytes read")
        self.count = count


@dataclass(slots=True)
class Member:
    """One archive member as its headers describe it; ``type`` is the tar type byte."""

    name: str
    type: int
    size: int
    mode: int
    mtime: float
    linkname: str

    def isreg(self) -> bool:
        return self.type in REGULAR

    def isdir(self) -> bool:
        return self.type == DIRECTORY

    def issym(self) -> bool:
        return self.type == SYMLINK

    def islnk(self) -> bool:
        return self.type == HARDLINK

    def ischr(self) -> bool:
        return self.type == CHARDEV

    def isblk(self) -> bool:
        return self.type == BLOCKDEV

    def isfifo(self) -> bool:
        return self.type == FIFO

    @property
    def type_name(self) -> str:
        return repr(bytes([self.type]))


def _string(field: bytes | memoryview) -> str:
    raw = bytes(field)
    end = raw.find(0)
    return (raw if end < 0 else raw[:end]).decode(_ENCODING, _ERRORS)


def _number(field: bytes | memoryview, what: str) -> int:
    raw = bytes(field)
    if raw[:1] in (b"\x80", b"\xff"):  # GNU base-256, for values octal cannot hold
        value = int.from_bytes(raw[1:], "big")
        return value - (1 << (8 * (len(raw) - 1))) if raw[0] == 0xFF else value
    text = raw.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise CorruptArchive(f"invalid tar header ({what} is not a number)") from None


def _checksum_ok(header: bytes) -> bool:
    stored = _number(header[148:156], "checksum")
    unsigned = sum(header) - sum(header[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    # Some old tar programs summed the bytes as signed chars.
    return stored == unsigned - 256 * sum(1 for b in header if b > 127)


class TarStream:
    """Members of the tar stream whose decompressed chunks ``chunks`` yields, in order.

    ``limit`` is read at every step: the most bytes of the stream that may be consumed so far
    (the caller raises it as it accepts members).
    """

    def __init__(self, chunks: Iterator[bytes], limit: Callable[[], int]) -> None:
        self._chunks = chunks
        self._limit = limit
        self._view = memoryview(b"")
        self._pos = 0
        self.consumed = 0
        self._global: dict[str, str] = {}
        self.ended = False

    # -- bytes --------------------------------------------------------------------------

    def _charge(self, n: int) -> None:
        self.consumed += n
        if self.consumed > self._limit():
            raise Overflow(self.consumed)

    def _pieces(self, n: int) -> Iterator[memoryview]:
        """The next ``n`` bytes as views, pulling chunks as needed; short only at the end."""
        self._charge(n)
        while n:
            if self._pos >= len(self._view):
                chunk = next(self._chunks, None)
                if chunk is None:
                    return
                self._view, self._pos = memoryview(chunk), 0
            piece = self._view[self._pos : self._pos + n]
            self._pos += len(piece)
            n -= len(piece)
            yield piece

    def _exactly(self, n: int) -> bytes:
        pieces = list(self._pieces(n))
        data = pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)
        if len(data) != n:
            raise CorruptArchive("the tar archive ends inside a member (truncated)")
        return data

    def _skip(self, n: int) -> None:
        for _ in self._pieces(n):
            pass

    def data(self, member: Member) -> list[memoryview]:
        """The member's data (all of it, as views) and the padding after it skipped."""
        pieces = list(self._pieces(member.size))
        if sum(len(p) for p in pieces) != member.size:
            raise CorruptArchive(f"the tar archive ends inside {member.name!r} (truncated)")
        self._skip(-member.size % BLOCK)
        return pieces

    def data_chunks(self, member: Member, chunk: int) -> Iterator[list[memoryview]]:
        """The member's data in parts of about ``chunk`` bytes (for members too large to hold)."""
        left = member.size
        while left:
            part = list(self._pieces(min(chunk, left)))
            got = sum(len(p) for p in part)
            if not got:
                raise CorruptArchive(f"the tar archive ends inside {member.name!r} (truncated)")
            left -= got
            yield part
        self._skip(-member.size % BLOCK)

    def drain(self) -> None:
        """Consume the rest of the stream (after the end-of-archive block), within the bound."""
        while True:
            rest = len(self._view) - self._pos
            if rest:
                self._charge(rest)
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._view, self._pos = memoryview(chunk), 0

    # -- members ------------------------------------------------------------------------

    def _header(self) -> bytes | None:
        """The next header block; None at the end-of-archive block."""
        pieces = list(self._pieces(BLOCK))
        header = pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)
        if not header:
            raise CorruptArchive(
                "the tar archive stops without its end-of-archive marker (truncated)"
            )
        if len(header) < BLOCK:
            raise CorruptArchive("the tar archive ends inside a header (truncated)")
        if header == _ZERO:
            return None
        if not _checksum_ok(header):
            raise CorruptArchive("invalid tar header (bad checksum)")
        return header

    def next(self) -> Member | None:
        """The next member, or None after the end-of-archive block."""
        if self.ended:
            return None
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            header = self._header()
            if header is None:
                if pax or long_name is not None or long_link is not None:
                    raise CorruptArchive("the tar archive ends after an extended header")
                self.ended = True
                return None
            kind = header[156]
            size = _number(header[124:136], "size")
            if size < 0:
                raise CorruptArchive("invalid tar header (negative size)")
            if kind in (_PAX, _GLOBAL_PAX):
                records = _pax_records(self._exactly(size))
                self._skip(-size % BLOCK)
                if kind == _GLOBAL_PAX:
                    self._global.update(records)
                else:
                    pax.update(records)
                continue
            if kind in (_LONGNAME, _LONGLINK):
                text = _string(self._exactly(size))
                self._skip(-size % BLOCK)
                if kind == _LONGNAME:
                    long_name = text
                else:
                    long_link = text
                continue
            return self._member(header, kind, size, {**self._global, **pax}, long_name, long_link)

    def _member(
        self,
        header: bytes,
        kind: int,
        size: int,
        pax: dict[str, str],
        long_name: str | None,
        long_link: str | None,
    ) -> Member:
        name = _string(header[0:100])
        if header[257:263] == b"ustar\0":  # POSIX ustar: a prefix field before the name
            prefix = _string(header[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        if long_name is not None:
            name = long_name
        linkname = long_link if long_link is not None else _string(header[157:257])
        mtime: float = _number(header[136:148], "mtime")
        if "path" in pax:
            name = pax["path"]
        if "linkpath" in pax:
            linkname = pax["linkpath"]
        try:
            if "size" in pax:
                size = int(pax["size"])
            if "mtime" in pax:
                mtime = float(pax["mtime"])
        except ValueError:
            raise CorruptArchive("invalid pax header (size or mtime is not a number)") from None
        if kind == 0 and name.endswith("/"):  # an old-style regular file named like a directory
            kind = DIRECTORY
        member = Member(name, kind, size, _number(header[100:108], "mode"), mtime, linkname)
        if not (member.isreg() or member.type in _KNOWN):
            return member  # the caller refuses it; its data would follow
        if not member.isreg():
            member.size = 0  # only regular files carry data (as tarfile reads them)
        return member


_KNOWN = frozenset({DIRECTORY, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, FIFO})


def _pax_records(data: bytes) -> dict[str, str]:
    """``"%d %s=%s\\n"`` records (the length counts the whole record)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptArchive("invalid pax header (a record without its length)") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise CorruptArchive("invalid pax header (a malformed record)")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode(_ENCODING, _ERRORS)] = value.decode(_ENCODING, _ERRORS)
        pos += length
    return records
