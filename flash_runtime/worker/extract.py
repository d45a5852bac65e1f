"""Extract the build artifact into the worker's app directory: safely, within bounds, once.

The artifact is treated as hostile input. Every member name, link target and size is checked
before anything is written, bytes are counted while they stream, and nothing is ever written
outside the target. We do not use ``TarFile.extract``/``extractall`` (nor their 3.11 filters):
we need byte counting, refusal of writes through symlinks, mode normalisation and
bookkeeping of what we created in one place, and writing the files ourselves gives all of that
with fewer syscalls than a filter plus ``extract`` would.

The archive is read in one sequential pass (:mod:`.tarstream`, our own tar reader, which hands
out members' data as views into the decompressed blocks) that starts writing at the first
member, while the gzip members ahead of it are decompressed on the other cores
(:mod:`.blockgzip`: artifacts from ``flash build`` index their members; others are decompressed
in order). (Writer threads were tried and lose on two cores: the pass is CPU-bound, and
``os.writev`` of views into the blocks is already one copy.)
``tarfile``'s regular mode would first scan the whole archive to index members (decompressing
everything once), its streaming mode copies every byte three times through Python, and neither
bounds metadata or counts bytes as we need. The gzip layer hashes the compressed file in the
same pass.

Bookkeeping files in the target (names starting with ``.flash-artifact`` are refused as members):

* ``.flash-artifact.lock``: ``flock``-ed while checking or extracting, so several workers on one
  host starting at once extract once.
* ``.flash-artifact.json``: written last, only after a complete extraction: the artifact's
  sha256, size, mtime_ns and the top-level entries the extraction created. No marker means
  "not extracted", whatever else the directory holds.
* ``.flash-artifact.journal``: exists while an extraction is in progress; lists top-level
  entries we own, so that a worker killed mid-extraction does not leave stale files behind for
  the next attempt.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import posixpath
import stat
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from ..errors import ArtifactError
from . import blockgzip, tarstream

# The process's umask, read once: modes are normalised (0755/0644) less it, so a platform that
# keeps its files private (umask 077) gets private extracted apps too.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_MEMBER_BYTES",
    "DEFAULT_MAX_TOTAL_BYTES",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "MARKER_NAME",
    "ensure_extracted",
]

MARKER_NAME = ".flash-artifact.json"
LOCK_NAME = ".flash-artifact.lock"
JOURNAL_NAME = ".flash-artifact.journal"
_RESERVED_PREFIX = ".flash-artifact"

_MIB = 1024 * 1024
DEFAULT_MAX_MEMBER_BYTES = 2048 * _MIB
DEFAULT_MAX_TOTAL_BYTES = 4096 * _MIB
DEFAULT_MAX_MEMBERS = 200_000
_MEMBER_ENV = "FLASH_MAX_MEMBER_MB"
_TOTAL_ENV = "FLASH_MAX_EXTRACT_MB"

_CHUNK = _MIB
# What the tar stream may carry per member besides file data: the header block, padding, and
# a pax record for the long paths deep dependency trees have. Anything beyond this (plus a
# fixed slack for tarfile's read-ahead and the end-of-archive padding) is a bomb or garbage.
_HEADER_ALLOWANCE = 4096
_STREAM_SLACK = _MIB

_MARKER_FORMAT = 1
_REBUILD = "rebuild it with `flash build` and redeploy"
_TAMPERED = f"`flash build` never produces this, so the artifact is corrupt or was tampered with: {_REBUILD}"

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Limits:
    member_bytes: int
    total_bytes: int
    members: int


@dataclass(frozen=True)
class _Marker:
    sha256: str
    size: int
    mtime_ns: int
    entries: tuple[str, ...]


# Everything that means "the file is not a complete .tar.gz" (checked before OSError, which
# otherwise means the target could not be written).
_UNREADABLE: tuple[type[BaseException], ...] = (
    tarstream.CorruptArchive,
    zlib.error,
    EOFError,
)


def ensure_extracted(
    artifact: Path,
    target: Path,
    *,
    max_member_bytes: int | None = None,
    max_total_bytes: int | None = None,
    max_members: int | None = None,
) -> bool:
    """Extract ``artifact`` (a ``.tar.gz`` from ``flash build``) into ``target`` unless that same
    artifact is already extracted there.

    Returns True if it extracted, False if it skipped because ``target`` already holds a
    complete extraction of an artifact with the same sha256 (recorded in
    ``target/.flash-artifact.json``; a matching size and mtime skip even the hashing).

    ``target`` is created if missing. Concurrent callers on one host are serialised with
    ``flock`` on ``target/.flash-artifact.lock``; the first extracts, the rest skip. When a
    different artifact was extracted there before, the top-level entries that extraction created
    are removed first; a target without a marker is extracted over, never cleaned.

    Limits (``None`` means the default): ``max_member_bytes`` per file (2 GiB, or
    ``FLASH_MAX_MEMBER_MB`` MiB), ``max_total_bytes`` for all files (4 GiB, or
    ``FLASH_MAX_EXTRACT_MB`` MiB), ``max_members`` entries (200,000). Declared sizes are
    checked before writing and actual bytes while writing.

    Raises :class:`~flash_runtime.errors.ArtifactError`, naming the member and what to do, when
    the artifact is missing, unreadable (corrupt or truncated gzip, not a tar), too large, or
    hostile: absolute or ``..`` paths, links leading outside ``target``, hardlinks to anything
    but an earlier regular file, device nodes, FIFOs, or paths through a symlink. On failure
    the marker is absent and whatever this call created is removed, so a partial extraction is
    never taken for a good one.
    """
    limits = _Limits(
        member_bytes=_limit(max_member_bytes, _MEMBER_ENV, DEFAULT_MAX_MEMBER_BYTES),
        total_bytes=_limit(max_total_bytes, _TOTAL_ENV, DEFAULT_MAX_TOTAL_BYTES),
        members=DEFAULT_MAX_MEMBERS if max_members is None else max_members,
    )
    artifact = Path(artifact)
    target = Path(target)
    try:
        raw = io.BufferedReader(io.FileIO(artifact), buffer_size=_CHUNK)
    except FileNotFoundError:
        raise ArtifactError(
            f"build artifact {artifact} does not exist: set FLASH_BUILD_ARTIFACT_PATH to the "
            "artifact's path, or build and deploy it with `flash build` / `flash deploy`"
        ) from None
    except OSError as err:
        raise ArtifactError(
            f"cannot read build artifact {artifact}: {err.strerror or err}; check "
            "FLASH_BUILD_ARTIFACT_PATH and the file's permissions"
        ) from None
    with raw:
        st = os.fstat(raw.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(
                f"build artifact {artifact} is not a regular file: set FLASH_BUILD_ARTIFACT_PATH "
                "to the .tar.gz that `flash build` wrote"
            )
        if st.st_size == 0:
            # gzip reads an empty file as an empty stream; say what actually happened.
            raise ArtifactError(
                f"build artifact {artifact} is unreadable: the file is empty (an interrupted "
                f"upload or copy?): {_REBUILD}"
            )
        root = _prepare_target(target)
        with _locked(root, target):
            try:
                return _ensure_locked(artifact, raw, st, root, limits)
            except OSError as err:
                raise ArtifactError(
                    f"cannot update app directory {target}: {err.strerror or err}; check free "
                    "disk space and that FLASH_APP_DIR is writable"
                ) from err


def _ensure_locked(
    artifact: Path,
    raw: io.BufferedReader[io.FileIO],
    st: os.stat_result,
    root: str,
    limits: _Limits,
) -> bool:
    """Under the lock: skip if the marker says this artifact is in place, else extract."""
    marker = _read_marker(root)
    digest: str | None = None
    if marker is not None:
        if marker.size == st.st_size and marker.mtime_ns == st.st_mtime_ns:
            return False
        digest = _sha256(raw)
        if digest == marker.sha256:
            # Same bytes, new mtime (copied again, re-downloaded): remember the new
            # stat so the next start takes the fast path.
            _write_marker(root, _Marker(digest, st.st_size, st.st_mtime_ns, marker.entries))
            return False
        raw.seek(0)
    _extract_locked(artifact, raw, st, root, limits, marker, digest)
    return True


def _limit(explicit: int | None, env: str, default: int) -> int:
    if explicit is not None:
        return explicit
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        mib = int(text)
    except ValueError:
        mib = -1
    if mib < 0:
        raise ArtifactError(
            f"{env}={text!r} must be a whole number of MiB (e.g. {default // _MIB})"
        )
    return mib * _MIB


def _prepare_target(target: Path) -> str:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ArtifactError(
            f"app directory {target} exists and is not a directory: point FLASH_APP_DIR at a directory"
        ) from None
    except OSError as err:
        raise ArtifactError(
            f"cannot create app directory {target}: {err.strerror or err}; point FLASH_APP_DIR "
            "at a writable directory"
        ) from None
    # Work on the real path, so a target that is itself a symlink (e.g. /app -> /data/app) is
    # fine while symlinks *inside* it are checked.
    return os.path.realpath(target)


@contextmanager
def _locked(root: str, target: Path) -> Iterator[None]:
    try:
        fd = os.open(
            os.path.join(root, LOCK_NAME),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o644,
        )
    except OSError as err:
        raise ArtifactError(
            f"cannot lock app directory {target}: {err.strerror or err}; make it writable, or set "
            "FLASH_DISABLE_UNPACK=1 if the app is already in place"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _sha256(raw: io.BufferedReader[io.FileIO]) -> str:
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := raw.readinto(buf):
        digest.update(view[:n])
    return digest.hexdigest()


def _is_entry_name(name: object) -> bool:
    """A name we may delete from the target: one plain path component, not our bookkeeping."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\x00" not in name
        and not name.startswith(_RESERVED_PREFIX)
    )


def _read_marker(root: str) -> _Marker | None:
    try:
        with open(os.path.join(root, MARKER_NAME), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    # A marker we cannot fully trust is no marker: the target is then extracted over but
    # nothing in it is deleted.
    if not isinstance(data, dict) or data.get("format") != _MARKER_FORMAT:
        return None
    sha, size, mtime_ns, entries = (data.get(k) for k in ("sha256", "size", "mtime_ns", "entries"))
    if not (isinstance(sha, str) and isinstance(size, int) and isinstance(mtime_ns, int)):
        return None
    if not isinstance(entries, list) or not all(_is_entry_name(e) for e in entries):
        return None
    return _Marker(sha, size, mtime_ns, tuple(entries))


def _write_marker(root: str, marker: _Marker) -> None:
    payload = {
        "format": _MARKER_FORMAT,
        "sha256": marker.sha256,
        "size": marker.size,
        "mtime_ns": marker.mtime_ns,
        "entries": sorted(marker.entries),
    }
    _write_atomic(os.path.join(root, MARKER_NAME), json.dumps(payload, indent=1) + "\n")


def _write_atomic(path: str, text: str) -> None:
    # Replace-by-rename so a reader (or a crash) never sees a half-written file. No fsync: a
    # worker's disk does not outlive a power loss in a way that would make it matter.
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_journal(root: str) -> set[str]:
    try:
        with open(os.path.join(root, JOURNAL_NAME), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    owned: set[str] = set()
    for line in lines:
        try:
            name = json.loads(line)
        except ValueError:
            continue  # the last line of a journal cut short by a crash
        if _is_entry_name(name):
            owned.add(name)
    return owned


def _remove_entry(root: str, name: str) -> None:
    path = os.path.join(root, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        import shutil  # (here: it imports bz2 and lzma, a few ms of every cold start)

        shutil.rmtree(path)  # does not follow symlinks inside the tree
    else:
        os.unlink(path)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _extract_locked(
    artifact: Path,
    raw: io.BufferedReader[io.FileIO],
    st: os.stat_result,
    root: str,
    limits: _Limits,
    marker: _Marker | None,
    digest: str | None,
) -> None:
    marker_path = os.path.join(root, MARKER_NAME)
    journal_path = os.path.join(root, JOURNAL_NAME)
    # Ours to delete: what the previous complete extraction created, and what an interrupted
    # one recorded in its journal. Journal them before dropping the marker, so a crash during
    # the clean-up still knows what to finish removing.
    owned = set(marker.entries if marker else ()) | _read_journal(root)
    if owned:
        _write_atomic(journal_path, "".join(json.dumps(name) + "\n" for name in sorted(owned)))
    _unlink_quiet(marker_path)
    try:
        for name in sorted(owned):
            _remove_entry(root, name)
        existing = {n for n in os.listdir(root) if not n.startswith(_RESERVED_PREFIX)}
    except OSError as err:
        raise ArtifactError(
            f"cannot remove the previous extraction from {root}: {err}; make the app directory "
            "writable or empty it"
        ) from None

    with open(journal_path, "a", encoding="utf-8") as journal:
        job = _Extraction(artifact, root, limits, existing, journal)
        try:
            try:
                digest = job.run(raw, digest)
            except tarstream.Overflow as err:
                raise job.overflow_error(err.count) from None
            except _UNREADABLE as err:
                raise job.unreadable_error(err) from err
            except OSError as err:
                raise job.write_error(err) from err
        except BaseException:
            leftovers = job.discard()
            journal.close()
            if not leftovers:
                _unlink_quiet(journal_path)
            raise
    _write_marker(root, _Marker(digest, st.st_size, st.st_mtime_ns, tuple(job.created)))
    _unlink_quiet(journal_path)


def _relative_link(link_dir: str, dest: str) -> str:
    """The link text leading from directory ``link_dir`` to ``dest`` (both relative to root)."""
    src_parts = [p for p in link_dir.split("/") if p]
    dest_parts = [] if dest == "." else dest.split("/")
    common = 0
    for a, b in zip(src_parts, dest_parts, strict=False):
        if a != b:
            break
        common += 1
    return "/".join([".."] * (len(src_parts) - common) + dest_parts[common:]) or "."


def _escapes(normalized: str) -> bool:
    return normalized == ".." or normalized.startswith("../")


class _Extraction:
    """One pass over the archive, writing into ``root`` and remembering what it created.

    Only this process writes into ``root`` while it holds the lock, so the checks below (lstat
    of path components, sets of what we created) cannot be raced by anyone but the artifact,
    and the artifact only acts through the members we let through.
    """

    def __init__(
        self,
        artifact: Path,
        root: str,
        limits: _Limits,
        existing: set[str],
        journal: IO[str],
    ) -> None:
        self.artifact = artifact
        self.root = root
        self.limits = limits
        self.existing = existing
        self.journal = journal
        self.created: dict[str, None] = {}  # top-level entries this extraction created, in order
        self.dirs: set[str] = {""}  # relative paths known to be real directories
        self.symlinks: set[str] = set()  # symlinks we created (never written through)
        self.files: set[str] = set()  # regular files we created (valid hardlink sources)
        self.members = 0
        self.declared = 0
        self.written = 0
        self.current = ""
        self.tar: tarstream.TarStream | None = None

    # -- the pass --------------------------------------------------------------------------

    def run(self, raw: io.BufferedReader[io.FileIO], digest: str | None) -> str:
        """Extract every member; return the artifact's sha256 (hashed on the way if unknown)."""
        # The worker core vendored for Runpod's images is left out: this worker runs its own.
        with blockgzip.Reader(raw.fileno(), sha256=digest is None, skip_image_only=True) as gz:
            self.tar = tarstream.TarStream(gz.chunks(), self._stream_limit)
            while (member := self.tar.next()) is not None:
                self._member(member)
            # Read the rest of the gzip stream: it checks the CRC and length of every member,
            # and anything past the tar's end still counts against the bound.
            self.tar.drain()
            return digest if digest is not None else gz.hexdigest()

    def _stream_limit(self) -> int:
        # Headers of the *next* member are read before we see it, hence members + 1.
        return self.declared + (self.members + 1) * _HEADER_ALLOWANCE + _STREAM_SLACK

    def _member(self, member: tarstream.Member) -> None:
        self.current = member.name
        self.members += 1
        if self.members > self.limits.members:
            raise self.refuse(
                member.name,
                f"is one member too many: the limit is {self.limits.members:,} members",
                "leave files out of the build (`flash build --exclude ...`); the limit guards "
                "against archive bombs",
            )
        name = self._normalize(member.name)
        if member.isreg():
            self._file(member, name)
        elif member.isdir():
            if name != ".":
                self._claim(name)
                self._ensure_dir(name, member.name)
        elif member.issym():
            self._symlink(member, name)
        elif member.islnk():
            self._hardlink(member, name)
        elif member.ischr():
            raise self.refuse(member.name, "is a character device node", _TAMPERED)
        elif member.isblk():
            raise self.refuse(member.name, "is a block device node", _TAMPERED)
        elif member.isfifo():
            raise self.refuse(member.name, "is a FIFO (named pipe)", _TAMPERED)
        else:
            raise self.refuse(
                member.name, f"has unsupported tar type {member.type_name}", _TAMPERED
            )

    # -- names -----------------------------------------------------------------------------

    def _normalize(self, raw_name: str) -> str:
        if not raw_name or "\x00" in raw_name:
            raise self.refuse(raw_name, "has an empty or NUL-containing name", _TAMPERED)
        if raw_name.startswith("/"):
            raise self.refuse(
                raw_name,
                "has an absolute path (members must be relative to the app directory)",
                _TAMPERED,
            )
        # Lexical normalisation, and from here on only the normalised name reaches the OS, so
        # "a/../b" can never be resolved through a symlink "a".
        name = posixpath.normpath(raw_name)
        if _escapes(name):
            raise self.refuse(raw_name, "escapes the app directory through '..'", _TAMPERED)
        if name.split("/", 1)[0].startswith(_RESERVED_PREFIX):
            raise self.refuse(
                raw_name,
                f"uses a name reserved for the extractor's own files ({_RESERVED_PREFIX}*)",
                _TAMPERED,
            )
        return name

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _claim(self, name: str) -> None:
        """Journal the member's top-level entry before creating anything under it."""
        top = name.split("/", 1)[0]
        if top not in self.created and top not in self.existing:
            self.journal.write(json.dumps(top) + "\n")
            self.journal.flush()
            self.created[top] = None

    def _ensure_dir(self, rel: str, member_name: str) -> None:
        """Make ``rel`` and its ancestors real directories, refusing to go through symlinks."""
        if rel in self.dirs:
            return
        prefix = ""
        for part in rel.split("/"):
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix in self.dirs:
                continue
            if prefix in self.symlinks:
                raise self.refuse(
                    member_name,
                    f"would be written through the symlink {prefix!r} extracted earlier "
                    "(the classic symlink-then-file escape)",
                    _TAMPERED,
                )
            path = self._path(prefix)
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    raise self.refuse(
                        member_name,
                        f"would be written through the symlink {prefix!r} already in the app "
                        "directory",
                        "empty the app directory (FLASH_APP_DIR) or rebuild without that path",
                    ) from None
                if not stat.S_ISDIR(st.st_mode):
                    raise self.refuse(
                        member_name,
                        f"needs {prefix!r} to be a directory, but it is a file",
                        _TAMPERED,
                    ) from None
            # (created rwxr-xr-x less the umask: the normalised mode, no chmod needed)
            self.dirs.add(prefix)

    def _create(self, member_name: str, name: str, create: Callable[[], _T]) -> _T:
        """Run ``create`` for a non-directory; a file or link already there is replaced (never
        followed), a directory is refused: it may already hold other members."""
        try:
            return create()
        except FileExistsError:
            pass
        st = os.lstat(self._path(name))
        if stat.S_ISDIR(st.st_mode):
            raise self.refuse(member_name, "would replace a directory of the same name", _TAMPERED)
        os.unlink(self._path(name))
        self.symlinks.discard(name)
        self.files.discard(name)
        return create()

    # -- member kinds ----------------------------------------------------------------------

    def _file(self, member: tarstream.Member, name: str) -> None:
        if name == ".":
            raise self.refuse(
                member.name, "is a file named like the app directory itself", _TAMPERED
            )
        self._check_sizes(member.name, member.size)
        self._claim(name)
        self._ensure_dir(posixpath.dirname(name), member.name)
        path = self._path(name)
        # Normalised (0755/0644, less the umask): exactly what os.open creates, so no fchmod.
        mode = (0o755 if member.mode & 0o111 else 0o644) & ~_UMASK
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._create(member.name, name, lambda: os.open(path, flags, mode))
        assert self.tar is not None
        try:
            if member.size <= _HOLD:
                data = self.tar.data(member)
                self._count(member.name, member.size)
                _write_all(fd, data)
            else:
                for part in self.tar.data_chunks(member, _CHUNK):
                    self._count(member.name, sum(len(p) for p in part))
                    _write_all(fd, part)
            _set_mtime(fd, member.mtime)
        finally:
            os.close(fd)
        self.files.add(name)

    def _check_sizes(self, member_name: str, size: int) -> None:
        limits = self.limits
        if size > limits.member_bytes:
            raise self.refuse(
                member_name,
                f"declares {size:,} bytes, over the per-file limit of {limits.member_bytes:,} bytes",
                f"if the file is meant to ship, raise {_MEMBER_ENV} (MiB) or leave it out of the "
                "build (`flash build --exclude ...`)",
            )
        if self.declared + size > limits.total_bytes:
            raise self.refuse(
                member_name,
                f"brings the declared total to {self.declared + size:,} bytes, over the limit of "
                f"{limits.total_bytes:,} bytes",
                f"raise {_TOTAL_ENV} (MiB) or make the build smaller (exclude files, trim "
                "dependencies)",
            )
        self.declared += size

    def _count(self, member_name: str, size: int) -> None:
        # Declared sizes were checked, but count what is handed to the writers too: the total
        # must hold even if a declared size was not what was checked.
        self.written += size
        if self.written > self.limits.total_bytes:
            raise self.refuse(
                member_name,
                f"pushes the extracted total past the limit of {self.limits.total_bytes:,} bytes",
                f"raise {_TOTAL_ENV} (MiB) or make the build smaller",
            )

    def _symlink(self, member: tarstream.Member, name: str) -> None:
        link = member.linkname
        if name == ".":
            raise self.refuse(
                member.name, "is a symlink named like the app directory itself", _TAMPERED
            )
        if not link or "\x00" in link:
            raise self.refuse(member.name, "is a symlink with an empty target", _TAMPERED)
        if link.startswith("/"):
            raise self.refuse(
                member.name,
                f"is a symlink to the absolute path {link!r}; symlinks must stay inside the app "
                "directory",
                _TAMPERED,
            )
        base = posixpath.dirname(name)
        dest = posixpath.normpath(posixpath.join(base, link))
        if _escapes(dest):
            raise self.refuse(
                member.name,
                f"is a symlink to {link!r}, which points outside the app directory",
                _TAMPERED,
            )
        self._claim(name)
        self._ensure_dir(base, member.name)
        # Store the normalised target, not the archive's text: "a/.." through a symlink "a"
        # resolves elsewhere than it reads. Normalised, a target only climbs real directories
        # (no member is ever written through a symlink) and cannot leave the root.
        text = _relative_link(base, dest)
        path = self._path(name)
        self._create(member.name, name, lambda: os.symlink(text, path))
        self.symlinks.add(name)

    def _hardlink(self, member: tarstream.Member, name: str) -> None:
        link = member.linkname
        source = posixpath.normpath(link) if link and "\x00" not in link else ""
        if not source or link.startswith("/") or _escapes(source):
            raise self.refuse(
                member.name, f"is a hardlink to {link!r}, outside the app directory", _TAMPERED
            )
        if source not in self.files:
            raise self.refuse(
                member.name,
                f"is a hardlink to {link!r}, which is not a regular file extracted earlier from "
                "the artifact",
                _TAMPERED,
            )
        if name == ".":
            raise self.refuse(
                member.name, "is a hardlink named like the app directory itself", _TAMPERED
            )
        if source == name:
            return  # a link to itself: nothing to do
        self._claim(name)
        self._ensure_dir(posixpath.dirname(name), member.name)
        self._create(member.name, name, lambda: self._link(member.name, source, name))
        self.files.add(name)

    def _link(self, member_name: str, source: str, name: str) -> None:
        src_path, dst_path = self._path(source), self._path(name)
        try:
            os.link(src_path, dst_path, follow_symlinks=False)
            return
        except FileExistsError:
            raise
        except OSError:
            pass  # no hardlinks here (EMLINK, EPERM on some filesystems): copy instead
        size = os.lstat(src_path).st_size
        self.written += size
        if self.written > self.limits.total_bytes:
            raise self.refuse(
                member_name,
                f"(a hardlink copied as a file) pushes the extracted total past the limit of "
                f"{self.limits.total_bytes:,} bytes",
                f"raise {_TOTAL_ENV} (MiB) or make the build smaller",
            )
        import shutil

        shutil.copyfile(src_path, dst_path, follow_symlinks=False)
        os.chmod(dst_path, stat.S_IMODE(os.lstat(src_path).st_mode))

    # -- failure -----------------------------------------------------------------------------

    def refuse(self, member_name: str, problem: str, advice: str) -> ArtifactError:
        return ArtifactError(
            f"build artifact {self.artifact}: member {member_name!r} {problem}; {advice}"
        )

    def overflow_error(self, count: int) -> ArtifactError:
        where = f" (at member {self.current!r})" if self.current else ""
        return ArtifactError(
            f"build artifact {self.artifact}: the archive decompresses to more data than its "
            f"members declare ({count:,} bytes read{where}, e.g. oversized pax or long-name "
            f"records); it is corrupt or a decompression bomb: {_REBUILD}"
        )

    def unreadable_error(self, err: BaseException) -> ArtifactError:
        detail = str(err) or type(err).__name__
        where = f" (at member {self.current!r})" if self.current else ""
        return ArtifactError(
            f"build artifact {self.artifact} is unreadable{where}: {detail}. It is not a complete "
            f"gzip-compressed tar archive (corrupt or truncated): {_REBUILD}"
        )

    def write_error(self, err: OSError) -> ArtifactError:
        where = f" member {self.current!r}" if self.current else ""
        return ArtifactError(
            f"cannot extract build artifact {self.artifact}{where} into {self.root}: "
            f"{err.strerror or err}; check free disk space and that the app directory "
            "(FLASH_APP_DIR) is writable"
        )

    def discard(self) -> list[str]:
        """Remove what this extraction created; return the entries that could not be removed."""
        leftovers: list[str] = []
        for name in reversed(self.created):
            try:
                _remove_entry(self.root, name)
            except OSError:
                leftovers.append(name)
        return leftovers


# Files up to this size are written whole, from views into the decompressed blocks (one
# ``writev``); larger ones part by part as they are decompressed.
_HOLD = 4 * _MIB


def _write_all(fd: int, pieces: list[memoryview]) -> None:
    while pieces:
        written = os.writev(fd, pieces)
        while pieces and written >= len(pieces[0]):
            written -= len(pieces[0])
            pieces = pieces[1:]
        if pieces and written:
            pieces = [pieces[0][written:], *pieces[1:]]


def _set_mtime(fd: int, mtime: float) -> None:
    try:
        # Keep the archive's mtimes: a shipped __pycache__ is only valid for sources whose
        # mtime matches, and recompiling at import time costs cold start.
        os.utime(fd, (mtime, mtime))
    except (OverflowError, ValueError):
        pass
