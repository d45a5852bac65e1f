"""Indexed gzip artifacts (flash_runtime.worker.blockgzip) and the tar reader over them
(flash_runtime.worker.tarstream): every gzip reader reads them as one archive, the worker reads
their blocks in parallel, and an index that lies, a truncated file or a broken member is
refused, never extracted in part."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from flash_runtime.errors import ArtifactError
from flash_runtime.pack import tarball
from flash_runtime.worker import blockgzip
from flash_runtime.worker.extract import MARKER_NAME, ensure_extracted

BLOCK = blockgzip.BLOCK_SIZE


def noise(size: int, seed: int) -> bytes:
    """Bytes that compress a little (so blocks differ in length), reproducibly."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(1, 12)) for _ in range(64)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """A few megabytes in files of many sizes: several blocks, members across block ends."""
    out = {f"pkg/small{i:03d}.py": noise(700 + 37 * i, i) for i in range(120)}
    out["pkg/data/large.bin"] = noise(int(2.5 * BLOCK), 1000)
    out["pkg/data/huge.bin"] = noise(5 * BLOCK + 123, 1001)  # over extract's 4 MiB hold
    out["deep/" + "/".join(f"level{i:02d}" for i in range(30)) + "/leaf.txt"] = b"leaf\n"
    return out


def build_artifact(tmp_path: Path, files: dict[str, bytes]) -> Path:
    """An artifact written by the packer's own writer (tarball.write_artifact)."""
    src = tmp_path / "src"
    entries = []
    for name, data in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(tarball.Entry(name, path=path, size=len(data)))
    written = tarball.write_artifact(
        tmp_path / "artifact.tar.gz", tarball.with_directories(entries), mtime=1_700_000_000
    )
    return written.path


def read_all(path: Path, **kwargs: object) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        with blockgzip.Reader(fd, **kwargs) as reader:  # type: ignore[arg-type]
            return b"".join(reader.chunks())
    finally:
        os.close(fd)


def test_packer_artifact_is_one_archive_for_every_reader(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    artifact = build_artifact(tmp_path, files)
    plain = gzip.decompress(artifact.read_bytes())  # Python's gzip: one stream
    fd = os.open(artifact, os.O_RDONLY)
    with blockgzip.Reader(fd, workers=2, sha256=True) as reader:
        assert reader.members == -(-len(plain) // BLOCK)  # every member is indexed
        assert reader.parallel
        assert b"".join(reader.chunks()) == plain
        assert reader.hexdigest() == hashlib.sha256(artifact.read_bytes()).hexdigest()
    os.close(fd)
    with tarfile.open(artifact) as tf:  # Python's tarfile, random access
        assert {m.name for m in tf.getmembers() if m.isfile()} == set(files)
    listed = subprocess.run(["tar", "tzf", str(artifact)], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert {n for n in listed.stdout.splitlines() if not n.endswith("/")} >= set(files)


def test_worker_extracts_what_gnu_tar_extracts(tmp_path: Path, files: dict[str, bytes]) -> None:
    artifact = build_artifact(tmp_path, files)
    ours, theirs = tmp_path / "ours", tmp_path / "tar"
    theirs.mkdir()
    subprocess.run(["tar", "xzf", str(artifact), "-C", str(theirs)], check=True)
    assert ensure_extracted(artifact, ours)

    def listing(root: Path) -> dict[str, tuple[int, int, bytes]]:
        return {
            p.relative_to(root).as_posix(): (
                p.stat().st_mode & 0o777,
                int(p.stat().st_mtime),
                p.read_bytes(),
            )
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".flash-artifact")
        }

    assert listing(ours) == listing(theirs)
    assert set(listing(ours)) == set(files)


def test_same_inputs_give_the_same_bytes(tmp_path: Path, files: dict[str, bytes]) -> None:
    first = build_artifact(tmp_path / "a", files).read_bytes()
    second = build_artifact(tmp_path / "b", files).read_bytes()
    assert first == second


def test_small_files_are_read_in_the_calling_thread(tmp_path: Path) -> None:
    artifact = build_artifact(tmp_path, {"app.py": b"print('hi')\n"})
    fd = os.open(artifact, os.O_RDONLY)
    with blockgzip.Reader(fd) as reader:
        assert reader.members == 1
        assert not reader.parallel
        assert b"".join(reader.chunks()) == gzip.decompress(artifact.read_bytes())
    os.close(fd)


def test_plain_gzip_members_and_zero_padding_are_read_in_order(tmp_path: Path) -> None:
    # Other packers' artifacts: no index. Several members, zeros between and after them (gzip
    # accepts both), and indexed members followed by plain ones.
    parts = [noise(300_000, 1), noise(200_000, 2), noise(10, 3)]
    plain = (
        gzip.compress(parts[0])
        + bytes(64)
        + gzip.compress(parts[1])
        + gzip.compress(parts[2])
        + bytes(100)
    )
    path = tmp_path / "plain.gz"
    path.write_bytes(plain)
    assert read_all(path) == b"".join(parts)
    indexed = b"".join(blockgzip.member(noise(BLOCK, i), 1) for i in range(5))
    path.write_bytes(indexed + gzip.compress(parts[0]))
    assert read_all(path, workers=2) == b"".join(noise(BLOCK, i) for i in range(5)) + parts[0]


def test_a_small_member_cannot_inflate_into_memory_at_once(tmp_path: Path) -> None:
    path = tmp_path / "zeros.gz"
    path.write_bytes(gzip.compress(bytes(64 * 1024 * 1024)))  # 64 MiB of zeros in ~64 KiB
    fd = os.open(path, os.O_RDONLY)
    with blockgzip.Reader(fd) as reader:
        sizes = [len(chunk) for chunk in reader.chunks()]
    os.close(fd)
    assert sum(sizes) == 64 * 1024 * 1024
    assert max(sizes) <= 1024 * 1024


def indexed_file(tmp_path: Path, count: int = 6) -> tuple[Path, list[bytes]]:
    blocks = [noise(BLOCK, 50 + i) for i in range(count)]
    path = tmp_path / "blocks.gz"
    path.write_bytes(b"".join(blockgzip.member(b, 1) for b in blocks))
    return path, blocks


@pytest.mark.parametrize("inflater", ["default", "zlib"])
@pytest.mark.parametrize(
    "damage",
    ["member length too short", "block length too small", "block length too large", "crc"],
)
def test_an_index_or_member_that_lies_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, inflater: str
) -> None:
    if inflater == "zlib":
        monkeypatch.setenv("FLASH_INFLATE", "zlib")
    path, blocks = indexed_file(tmp_path)
    data = bytearray(path.read_bytes())
    second = len(blockgzip.member(blocks[0], 1))  # where the second member starts
    if damage == "member length too short":
        data[second + 16 : second + 20] = (len(blockgzip.member(blocks[1], 1)) - 100).to_bytes(
            4, "little"
        )
    elif damage == "block length too small":
        data[second + 20 : second + 24] = (BLOCK - 1).to_bytes(4, "little")
    elif damage == "block length too large":
        data[second + 20 : second + 24] = (BLOCK + 1).to_bytes(4, "little")
    else:
        end = second + len(blockgzip.member(blocks[1], 1))
        data[end - 8] ^= 0xFF  # the CRC in the second member's trailer
    path.write_bytes(bytes(data))
    with pytest.raises((zlib.error, EOFError)):
        read_all(path, workers=2)


def test_a_truncated_indexed_file_is_an_error(tmp_path: Path) -> None:
    path, _ = indexed_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(EOFError):
        read_all(path, workers=2)


def test_damaged_block_of_an_artifact_leaves_nothing_behind(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    artifact = build_artifact(tmp_path, files)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 32] = bytes(32)
    artifact.write_bytes(bytes(data))
    app = tmp_path / "app"
    with pytest.raises(ArtifactError) as caught:
        ensure_extracted(artifact, app)
    assert "unreadable" in str(caught.value)
    assert [p.name for p in app.iterdir()] == [".flash-artifact.lock"]


@pytest.mark.parametrize(
    "fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=str
)
def test_tar_formats_of_other_tools_extract_as_tarfile_reads_them(tmp_path: Path, fmt: int) -> None:
    # ustar's prefix field, GNU long names and link names, pax records (and a global pax
    # header): what GNU tar and Python's tarfile write.
    long_dir = "/".join(f"directory{i:02d}" for i in range(12))  # > 100 bytes, < 155
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        if fmt == tarfile.PAX_FORMAT:
            tf.pax_headers = {"comment": "global"}

        def add(name: str, data: bytes | None = None, **fields: object) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = 1_650_000_000
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)

        add(long_dir, type=tarfile.DIRTYPE, mode=0o755)
        add(f"{long_dir}/module.py", b"x = 1\n" * 30, mode=0o644)
        add("bin/tool", b"#!/bin/sh\n", mode=0o755)
        link_target = f"../{long_dir}/module.py"
        if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold a link target this long
            add("bin/link.py", type=tarfile.SYMTYPE, linkname=link_target)
        # (tarfile chmods a hardlink to the link member's own mode, changing its source too)
        add("bin/hard", type=tarfile.LNKTYPE, linkname="bin/tool", mode=0o755)
        if fmt != tarfile.USTAR_FORMAT:
            add("n/" + "x" * 150 + ".txt", b"long name\n")  # GNU longname / pax path
    artifact = tmp_path / "other.tar.gz"
    artifact.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ensure_extracted(artifact, ours)
    with tarfile.open(artifact) as tf:
        tf.extractall(theirs, filter="tar")

    def listing(root: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if rel.startswith(".flash-artifact"):
                continue
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (p.read_bytes(), p.stat().st_mode & 0o111 != 0, int(p.stat().st_mtime))
        return out

    assert listing(ours) == listing(theirs)
    assert (ours / MARKER_NAME).is_file()
    shutil.rmtree(theirs)


def test_a_part_marked_for_runpods_images_only_is_skipped_by_our_worker_alone(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    """The vendored core's members (pack/core.py) carry the image-only mark: every reader sees
    one archive with the core in it, our extractor leaves the core out without inflating it."""
    src = tmp_path / "core-src"
    core = {".flash-worker/core.zip": noise(int(1.5 * BLOCK), 7), ".flash-worker/x.py": b"x=1\n"}
    entries = []
    for name, data in core.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
        entries.append(tarball.Entry(name, path=src / name, size=len(data)))
    segment = tmp_path / "core.tar.gz"
    length = tarball.write_segment(
        segment, tarball.with_directories(entries), 1_700_000_000, image_only=True
    )
    project = {"app.py": b"print('hi')\n", "pkg/data.bin": files["pkg/data/large.bin"]}
    project_entries = []
    for name, data in project.items():
        (tmp_path / "p" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "p" / name).write_bytes(data)
        project_entries.append(tarball.Entry(name, path=tmp_path / "p" / name, size=len(data)))
    artifact = tarball.write_artifact(
        tmp_path / "artifact.tar.gz",
        tarball.with_directories(project_entries),
        mtime=1_700_000_000,
        segments=[(segment, length)],
    ).path

    plain = gzip.decompress(artifact.read_bytes())
    everything = set(core) | set(project)
    with tarfile.open(artifact) as tf:
        assert {m.name for m in tf.getmembers() if m.isfile()} == everything
    listed = subprocess.run(["tar", "tzf", str(artifact)], capture_output=True, text=True)
    assert {n for n in listed.stdout.splitlines() if not n.endswith("/")} == everything

    assert read_all(artifact) == plain
    fd = os.open(artifact, os.O_RDONLY)
    with blockgzip.Reader(fd, sha256=True, skip_image_only=True) as reader:
        assert reader.members == -(-(len(plain) - length) // BLOCK)
        assert b"".join(reader.chunks()) == plain[length:]  # the core's bytes, and only those
        assert reader.hexdigest() == hashlib.sha256(artifact.read_bytes()).hexdigest()
    os.close(fd)

    target = tmp_path / "app"
    assert ensure_extracted(artifact, target)
    assert not (target / ".flash-worker").exists()
    extracted = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert {n for n in extracted if not n.startswith(".flash-artifact")} == set(project)
    assert MARKER_NAME in extracted
    assert (target / "pkg/data.bin").read_bytes() == project["pkg/data.bin"]
