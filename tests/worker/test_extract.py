"""flash_runtime.worker.extract: hostile artifacts are refused, good ones are extracted once.

Every hostile tarball is built here with crafted ``TarInfo`` objects. Each refusal test checks
that the message names the member and the reason, that nothing was written outside the app
directory, and that nothing partial (files, marker, journal) was left inside it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import stat
import tarfile
from pathlib import Path

import pytest

from flash_runtime.errors import ArtifactError
from flash_runtime.worker import extract as extract_module
from flash_runtime.worker.extract import JOURNAL_NAME, LOCK_NAME, MARKER_NAME, ensure_extracted

Member = tuple[tarfile.TarInfo, bytes | None]
MTIME = 1_700_000_000


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    return info, data


def dir_(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def sym(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def hard(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def tar_bytes(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_artifact(path: Path, members: list[Member]) -> Path:
    path.write_bytes(gzip.compress(tar_bytes(members), mtime=0))
    return path


def refuse(
    tmp_path: Path, members: list[Member], *, outside: tuple[str, ...] = (), **limits: int
) -> str:
    """Extract a hostile artifact into tmp_path/app; return the error message.

    Asserts that tmp_path holds only the app directory, the artifact and the test's own
    ``outside`` entries (nothing was written beside the app directory), and that the app
    directory holds nothing but the lock file: no marker, no journal, no partial members.
    """
    artifact = write_artifact(tmp_path / "artifact.tar.gz", members)
    app = tmp_path / "app"
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, app, **limits)
    assert_refused_cleanly(tmp_path, outside)
    return str(caught.value)


def assert_refused_cleanly(tmp_path: Path, outside: tuple[str, ...] = ()) -> None:
    assert sorted(os.listdir(tmp_path)) == sorted(["app", "artifact.tar.gz", *outside])
    assert sorted(os.listdir(tmp_path / "app")) == [LOCK_NAME]


def tree(root: Path) -> dict[str, str]:
    """Every entry under root (bookkeeping excluded): file contents, 'dir', or '-> target'."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".flash-artifact"):
                continue
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = path.read_text()
    return found


# --------------------------------------------------------------------------------------------
# Hostile and broken artifacts
# --------------------------------------------------------------------------------------------


def test_absolute_member_path_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "evil.txt"
    message = refuse(tmp_path, [reg("ok.txt", b"fine"), reg(str(victim), b"pwned")])
    assert repr(str(victim)) in message
    assert "absolute path" in message
    assert not victim.exists()


def test_dotdot_escape_is_refused(tmp_path: Path) -> None:
    message = refuse(tmp_path, [dir_("pkg"), reg("pkg/../../evil.txt", b"pwned")])
    assert "'pkg/../../evil.txt'" in message
    assert "escapes the app directory through '..'" in message
    assert not (tmp_path / "evil.txt").exists()


def test_absolute_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    message = refuse(
        tmp_path, [sym("link", str(outside)), reg("link/evil.txt", b"pwned")], outside=("outside",)
    )
    assert "'link'" in message
    assert "symlink to the absolute path" in message
    assert list(outside.iterdir()) == []


def test_relative_symlink_escaping_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    message = refuse(
        tmp_path,
        [dir_("pkg"), sym("pkg/link", "../../outside"), reg("pkg/link/evil.txt", b"pwned")],
        outside=("outside",),
    )
    assert "'pkg/link'" in message
    assert "'../../outside', which points outside the app directory" in message
    assert list(outside.iterdir()) == []


def test_symlink_then_file_through_it_classic_is_refused(tmp_path: Path) -> None:
    # The classic: "link -> /somewhere", then "link/evil". The link itself is already refused.
    outside = tmp_path / "outside"
    outside.mkdir()
    message = refuse(
        tmp_path, [sym("link", str(outside)), reg("link/evil", b"pwned")], outside=("outside",)
    )
    assert "'link'" in message
    assert not (outside / "evil").exists()


def test_write_through_an_earlier_symlink_is_refused(tmp_path: Path) -> None:
    # Even a symlink that stays inside is never written through: "a -> ." and "b -> a/.." read
    # as inside, but writing through such chains is how escapes are built.
    message = refuse(
        tmp_path,
        [dir_("real"), sym("link", "real"), reg("link/evil.txt", b"pwned")],
    )
    assert "'link/evil.txt'" in message
    assert "written through the symlink 'link' extracted earlier" in message


def test_hardlink_escaping_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    message = refuse(
        tmp_path, [reg("ok.txt", b"x"), hard("stolen", "../secret.txt")], outside=("secret.txt",)
    )
    assert "'stolen'" in message
    assert "hardlink to '../secret.txt', outside the app directory" in message
    assert secret.stat().st_nlink == 1


def test_hardlink_absolute_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    message = refuse(tmp_path, [hard("stolen", str(secret))], outside=("secret.txt",))
    assert "'stolen'" in message
    assert "outside the app directory" in message
    assert secret.stat().st_nlink == 1


@pytest.mark.parametrize("target", ["missing.txt", "pkg", "alias"])
def test_hardlink_to_anything_but_an_earlier_regular_member_is_refused(
    tmp_path: Path, target: str
) -> None:
    message = refuse(
        tmp_path,
        [dir_("pkg"), reg("pkg/a.txt", b"a"), sym("alias", "pkg/a.txt"), hard("h", target)],
    )
    assert "'h'" in message
    assert "not a regular file extracted earlier" in message


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
    ids=["char-device", "block-device", "fifo"],
)
def test_device_nodes_and_fifos_are_refused(tmp_path: Path, kind: bytes, reason: str) -> None:
    message = refuse(tmp_path, [reg("ok.txt", b"x"), special("dev/node", kind)])
    assert "'dev/node'" in message
    assert reason in message


def test_declared_member_size_over_limit_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_write(*args: object) -> None:
        raise AssertionError("data was written before the declared size was checked")

    monkeypatch.setattr(extract_module, "_write_all", must_not_write)
    message = refuse(tmp_path, [reg("big.bin", b"x" * 4096)], max_member_bytes=1024)
    assert "'big.bin'" in message
    assert "declares 4,096 bytes, over the per-file limit of 1,024 bytes" in message
    assert "FLASH_MAX_MEMBER_MB" in message


def test_declared_total_over_limit_is_refused(tmp_path: Path) -> None:
    members = [reg(f"part{i}.bin", b"x" * 4096) for i in range(3)]
    message = refuse(tmp_path, members, max_total_bytes=10_000)
    assert "'part2.bin'" in message
    assert "over the limit of 10,000 bytes" in message
    assert "FLASH_MAX_EXTRACT_MB" in message


def test_member_with_more_data_than_it_declares_is_unreadable(tmp_path: Path) -> None:
    # The reader takes exactly the declared bytes; what follows must be the next header, so
    # data beyond the declared size is read as a header and fails its checksum.
    raw = bytearray(tar_bytes([reg("small.txt", b"tiny"), reg("next.txt", b"n")]))
    header = 512  # no pax header for short names: small.txt's header, then its data block
    raw[header : header + 512] = b"x" * 512  # its data block, now all data...
    raw[header + 512 : header + 1024] = b"y" * 512  # ...and more of it where next.txt's header was
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(gzip.compress(bytes(raw), mtime=0))
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    assert "unreadable" in str(caught.value)
    assert "invalid tar header" in str(caught.value)
    assert_refused_cleanly(tmp_path)


def test_actual_total_over_limit_is_cut_off_mid_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend every header declared an empty file, so only the count of bytes actually
    # written can stop the second file, part-way through (1,000-byte chunks).
    real_check = extract_module._Extraction._check_sizes

    def headers_say_empty(self: extract_module._Extraction, name: str, size: int) -> None:
        real_check(self, name, 0)

    monkeypatch.setattr(extract_module._Extraction, "_check_sizes", headers_say_empty)
    monkeypatch.setattr(extract_module, "_CHUNK", 1000)
    members = [reg(f"f{i}.bin", b"y" * 6000) for i in range(2)]
    message = refuse(tmp_path, members, max_total_bytes=8000, max_member_bytes=1_000_000)
    assert "'f1.bin'" in message
    assert "pushes the extracted total past the limit of 8,000 bytes" in message


def test_oversized_pax_record_is_a_bomb(tmp_path: Path) -> None:
    # Header metadata is not covered by any declared size; 3 MiB of it for one member is a bomb.
    info, data = reg("innocent.txt", b"x")
    info.pax_headers = {"comment": "z" * (3 * 1024 * 1024)}
    message = refuse(tmp_path, [reg("first.txt", b"1"), (info, data)])
    assert "decompresses to more data than its members declare" in message
    assert "'first.txt'" in message


def test_too_many_members_is_refused(tmp_path: Path) -> None:
    message = refuse(tmp_path, [reg(f"m{i}.txt", b"x") for i in range(6)], max_members=5)
    assert "'m5.txt'" in message
    assert "the limit is 5 members" in message


def test_reserved_bookkeeping_name_is_refused(tmp_path: Path) -> None:
    fake_marker = json.dumps({"format": 1, "sha256": "0" * 64, "size": 0, "mtime_ns": 0})
    message = refuse(tmp_path, [reg(MARKER_NAME, fake_marker.encode())])
    assert repr(MARKER_NAME) in message
    assert "reserved" in message


def good_members() -> list[Member]:
    return [reg(f"pkg/mod{i}.py", f"value = {i}\n".encode() * 50) for i in range(40)]


def test_corrupt_gzip_is_unreadable(tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(tar_bytes(good_members()), mtime=0))
    for i in range(len(blob) // 3, len(blob) // 3 + 64):
        blob[i] ^= 0x5A
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    message = str(caught.value)
    assert "unreadable" in message
    assert "flash build" in message
    assert_refused_cleanly(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an archive\n", gzip.compress(b"gzip, but not a tar\n" * 100)],
    ids=["empty", "not-gzip", "gzip-not-tar"],
)
def test_non_tar_gz_file_is_unreadable(tmp_path: Path, content: bytes) -> None:
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(content)
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    message = str(caught.value)
    assert str(artifact) in message
    assert "unreadable" in message
    assert "flash build" in message
    if content:
        assert_refused_cleanly(tmp_path)
    else:  # refused before the app directory is even created
        assert os.listdir(tmp_path) == ["artifact.tar.gz"]


def test_truncated_artifact_is_unreadable(tmp_path: Path) -> None:
    blob = gzip.compress(tar_bytes(good_members()), mtime=0)
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    message = str(caught.value)
    assert "unreadable" in message
    assert "truncated" in message
    assert "flash build" in message
    assert_refused_cleanly(tmp_path)  # members extracted before the cut were removed again


def test_truncated_tar_inside_intact_gzip_is_unreadable(tmp_path: Path) -> None:
    # tarfile alone would treat the missing header as the end of the archive and report success.
    raw = tar_bytes([reg("a.txt", b"a"), reg("b.txt", b"b"), reg("c.txt", b"c")])
    cut = 3 * 512  # pax-free headers: a.txt header + data, b.txt header; cut before b's data
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(gzip.compress(raw[:cut], mtime=0))
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    message = str(caught.value)
    assert "unreadable" in message
    assert_refused_cleanly(tmp_path)


def test_truncated_tar_without_end_marker_is_unreadable(tmp_path: Path) -> None:
    raw = tar_bytes([reg("a.txt", b"a"), reg("b.txt", b"b")])
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(gzip.compress(raw[: 4 * 512], mtime=0))  # both members, no end blocks
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    assert "without its end-of-archive marker" in str(caught.value)
    assert_refused_cleanly(tmp_path)


def test_missing_artifact_names_path_and_variable(tmp_path: Path) -> None:
    artifact = tmp_path / "nowhere" / "artifact.tar.gz"
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, tmp_path / "app")
    message = str(caught.value)
    assert str(artifact) in message
    assert "FLASH_BUILD_ARTIFACT_PATH" in message
    assert not (tmp_path / "app").exists()


def test_env_limits_apply_and_bad_values_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_MAX_MEMBER_MB", "0")
    message = refuse(tmp_path, [reg("one-byte.txt", b"x")])
    assert "'one-byte.txt'" in message
    assert "per-file limit of 0 bytes" in message

    monkeypatch.setenv("FLASH_MAX_MEMBER_MB", "lots")
    with pytest.raises(ArtifactError, match="FLASH_MAX_MEMBER_MB='lots'"):
        ensure_extracted(tmp_path / "artifact.tar.gz", tmp_path / "app")
    monkeypatch.delenv("FLASH_MAX_MEMBER_MB")
    monkeypatch.setenv("FLASH_MAX_EXTRACT_MB", "-1")
    with pytest.raises(ArtifactError, match="FLASH_MAX_EXTRACT_MB"):
        ensure_extracted(tmp_path / "artifact.tar.gz", tmp_path / "app")


# --------------------------------------------------------------------------------------------
# Good artifacts
# --------------------------------------------------------------------------------------------


def sample_members() -> list[Member]:
    return [
        reg("flash_manifest.json", b'{"version": "1.0"}'),
        reg("main.py", b"print('hi')\n"),
        dir_("deps"),
        reg("deps/pkg/__init__.py", b"from .core import x\n"),  # parent dir only implied
        reg("deps/pkg/core.py", b"x = 1\n", mode=0o600),
        reg("deps/pkg/bin/tool", b"#!/bin/sh\n", mode=0o777),
        reg("deps/pkg/empty.txt", b""),
        reg("./deps/lib/libfoo.so.1", b"ELF"),
        sym("deps/lib/libfoo.so", "libfoo.so.1"),
        sym("deps/pkg/lib", "../lib"),
        sym("deps/alias", "pkg"),
        hard("deps/pkg/core_copy.py", "deps/pkg/core.py"),
    ]


def test_normal_extraction(tmp_path: Path) -> None:
    artifact = write_artifact(tmp_path / "artifact.tar.gz", sample_members())
    app = tmp_path / "app"
    assert ensure_extracted(artifact, app) is True

    assert tree(app) == {
        "flash_manifest.json": '{"version": "1.0"}',
        "main.py": "print('hi')\n",
        "deps": "dir",
        "deps/pkg": "dir",
        "deps/pkg/__init__.py": "from .core import x\n",
        "deps/pkg/core.py": "x = 1\n",
        "deps/pkg/core_copy.py": "x = 1\n",
        "deps/pkg/bin": "dir",
        "deps/pkg/bin/tool": "#!/bin/sh\n",
        "deps/pkg/empty.txt": "",
        "deps/pkg/lib": "-> ../lib",
        "deps/lib": "dir",
        "deps/lib/libfoo.so.1": "ELF",
        "deps/lib/libfoo.so": "-> libfoo.so.1",
        "deps/alias": "-> pkg",
    }
    # Inside symlinks work; modes are normalised; mtimes kept (valid shipped __pycache__).
    assert (app / "deps/alias/core.py").read_text() == "x = 1\n"
    assert (app / "deps/pkg/lib/libfoo.so").read_text() == "ELF"
    assert stat.S_IMODE((app / "deps/pkg/core.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((app / "deps/pkg/bin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((app / "deps/pkg").stat().st_mode) == 0o755
    assert (app / "main.py").stat().st_mtime == MTIME
    assert (app / "deps/pkg/core_copy.py").samefile(app / "deps/pkg/core.py")

    marker = json.loads((app / MARKER_NAME).read_text())
    assert marker["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert marker["size"] == artifact.stat().st_size
    assert marker["mtime_ns"] == artifact.stat().st_mtime_ns
    assert marker["entries"] == ["deps", "flash_manifest.json", "main.py"]
    assert sorted(p.name for p in app.iterdir() if p.name.startswith(".")) == [
        MARKER_NAME,
        LOCK_NAME,
    ]
    assert sorted(os.listdir(tmp_path)) == ["app", "artifact.tar.gz"]


def test_symlink_targets_are_stored_normalised(tmp_path: Path) -> None:
    # "b -> a/.." reads as inside, but through "a -> ." it would resolve to the parent of the
    # app directory. Stored normalised, it is "b -> .".
    artifact = write_artifact(tmp_path / "artifact.tar.gz", [sym("a", "."), sym("b", "a/..")])
    app = tmp_path / "app"
    assert ensure_extracted(artifact, app) is True
    assert os.readlink(app / "b") == "."
    assert os.path.realpath(app / "b") == os.path.realpath(app)


def test_file_member_replaces_symlink_without_following_it(tmp_path: Path) -> None:
    members = [reg("target.txt", b"orig"), sym("link", "target.txt"), reg("link", b"new")]
    app = tmp_path / "app"
    assert ensure_extracted(write_artifact(tmp_path / "artifact.tar.gz", members), app)
    assert not (app / "link").is_symlink()
    assert (app / "link").read_text() == "new"
    assert (app / "target.txt").read_text() == "orig"


def test_second_call_skips_without_rewriting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = write_artifact(tmp_path / "artifact.tar.gz", sample_members())
    app = tmp_path / "app"
    assert ensure_extracted(artifact, app) is True
    before = {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in app.rglob("*")}

    def must_not_hash(raw: object) -> str:
        raise AssertionError("the fast path hashed the artifact")

    with monkeypatch.context() as patch:
        patch.setattr(extract_module, "_sha256", must_not_hash)
        assert ensure_extracted(artifact, app) is False

    # Same bytes, new mtime (e.g. downloaded again): hashed, still skipped, marker refreshed.
    os.utime(artifact, ns=(MTIME * 10**9, MTIME * 10**9))
    assert ensure_extracted(artifact, app) is False
    assert json.loads((app / MARKER_NAME).read_text())["mtime_ns"] == MTIME * 10**9

    after = {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in app.rglob("*")}
    marker = app / MARKER_NAME
    assert {p: v for p, v in after.items() if p != marker} == {
        p: v for p, v in before.items() if p != marker
    }


def test_different_artifact_replaces_previous_extraction(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "keep.txt").write_text("not ours")  # present before any extraction: never deleted
    first = write_artifact(
        tmp_path / "first.tar.gz",
        [reg("old_module.py", b"old"), reg("pkg/a.py", b"a"), reg("pkg/shared.py", b"v1")],
    )
    second = write_artifact(
        tmp_path / "second.tar.gz", [reg("pkg/b.py", b"b"), reg("pkg/shared.py", b"v2")]
    )
    assert ensure_extracted(first, app) is True
    assert ensure_extracted(second, app) is True
    assert tree(app) == {
        "keep.txt": "not ours",
        "pkg": "dir",
        "pkg/b.py": "b",
        "pkg/shared.py": "v2",
    }
    marker = json.loads((app / MARKER_NAME).read_text())
    assert marker["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
    assert marker["entries"] == ["pkg"]


def test_failed_extraction_leaves_no_marker_and_next_good_one_extracts(tmp_path: Path) -> None:
    app = tmp_path / "app"
    good = write_artifact(tmp_path / "good.tar.gz", [reg("app.py", b"ok")])
    bad = write_artifact(tmp_path / "bad.tar.gz", [reg("new.py", b"x"), sym("l", "/etc")])
    assert ensure_extracted(good, app) is True
    with pytest.raises(ArtifactError, match="'l'"):
        ensure_extracted(bad, app)
    assert sorted(os.listdir(app)) == [LOCK_NAME]
    assert ensure_extracted(good, app) is True
    assert tree(app) == {"app.py": "ok"}


def test_interrupted_extraction_is_cleaned_up_on_next_start(tmp_path: Path) -> None:
    # What a worker killed mid-extraction leaves: a journal, partial files, no marker.
    app = tmp_path / "app"
    (app / "stale_pkg").mkdir(parents=True)
    (app / "stale_pkg" / "gone.py").write_text("stale")
    (app / "keep.txt").write_text("not ours")
    (app / JOURNAL_NAME).write_text('"stale_pkg"\n"half-writ')
    artifact = write_artifact(tmp_path / "artifact.tar.gz", [reg("fresh.py", b"new")])
    assert ensure_extracted(artifact, app) is True
    assert tree(app) == {"fresh.py": "new", "keep.txt": "not ours"}
    assert not (app / JOURNAL_NAME).exists()


def _extract_in_child(
    artifact: str,
    app: str,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[bool],
) -> None:
    barrier.wait()
    results.put(ensure_extracted(Path(artifact), Path(app)))


def test_concurrent_workers_extract_once(tmp_path: Path) -> None:
    members = [reg(f"pkg{i % 10}/mod{i}.py", f"n = {i}\n".encode()) for i in range(300)]
    artifact = write_artifact(tmp_path / "artifact.tar.gz", members)
    app = tmp_path / "app"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    results: multiprocessing.Queue[bool] = ctx.Queue()
    procs = [
        ctx.Process(target=_extract_in_child, args=(str(artifact), str(app), barrier, results))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=20) for _ in procs)
    for proc in procs:
        proc.join(timeout=20)
        assert proc.exitcode == 0
    assert outcomes == [False, False, False, True]
    expected = {f"pkg{i % 10}/mod{i}.py": f"n = {i}\n" for i in range(300)}
    expected.update({f"pkg{i}": "dir" for i in range(10)})
    assert tree(app) == expected
    assert sorted(p.name for p in app.iterdir() if p.name.startswith(".")) == [
        MARKER_NAME,
        LOCK_NAME,
    ]
