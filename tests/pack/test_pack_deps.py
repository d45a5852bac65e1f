"""Dependency installation: flat --target install, image exclusions, cache, installer errors.

Most tests install wheels made on the spot from a local directory (``--no-index
--find-links``), so they need no network and take well under a second each; one test installs
``requests`` from PyPI. Each test gets its own FLASH_HOME, so caches never leak between tests.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import APPS

from flash_runtime.pack import BuildError, build


@pytest.fixture(autouse=True)
def own_flash_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "flash_home"
    monkeypatch.setenv("FLASH_HOME", str(home))
    monkeypatch.delenv("FLASH_CACHE_DIR")  # its caches under it, as by default
    monkeypatch.delenv("FLASH_INSTALLER", raising=False)
    return home


def make_wheel(
    dest: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()
) -> Path:
    """A minimal pure-Python wheel, built by hand (no build backend, no network)."""
    dist = f"{name.replace('-', '_')}-{version}"
    contents = dict(files)
    contents[f"{dist}.dist-info/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    contents[f"{dist}.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: flash-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in contents.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    contents[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in contents.items():
            zf.writestr(path, text)
    return wheel


def local_index(root: Path) -> Path:
    wheels = root / "wheels"
    make_wheel(
        wheels,
        "flashdep-a",
        "1.0",
        {"flashdep_a/__init__.py": "VALUE = 'a'\n"},
        requires=("flashdep-b", "numpy"),
    )
    make_wheel(wheels, "flashdep-b", "2.0", {"flashdep_b.py": "VALUE = 'b'\n"})
    # Stands in for numpy, which the worker images preinstall: it must never be bundled.
    make_wheel(wheels, "numpy", "99.0", {"numpy/__init__.py": "FAKE = True\n"})
    return wheels


def project_with(tmp_path: Path, requirements: str) -> Path:
    project = tmp_path / "proj"
    shutil.copytree(APPS / "pack_deps", project)
    (project / "requirements.txt").write_text(requirements)
    return project


def names(artifact: Path) -> set[str]:
    with tarfile.open(artifact) as tar:
        return {m.name for m in tar.getmembers()}


@pytest.fixture(autouse=True)
def _our_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about installing and caching, on flash_runtime's own images (whose package
    set, numpy included, the packer knows with versions); tests/e2e/test_official_image.py covers
    Runpod's official images."""
    monkeypatch.setenv("FLASH_IMAGE_REPOSITORY", "registry.example/flash")


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_install_flat_exclude_and_reuse_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installer: str
) -> None:
    monkeypatch.setenv("FLASH_INSTALLER", installer)
    wheels = local_index(tmp_path)
    # The endpoint's own dependency (requests) is not in the local index: leave it out.
    project = project_with(tmp_path, f"--no-index\n--find-links {wheels}\nflashdep-a\n")
    first = build(project, exclude=["requests"])
    assert first.deps_cached is False and first.deps_installer == installer
    assert sorted((p.name, p.version) for p in first.packages) == [
        ("flashdep-a", "1.0"),
        ("flashdep-b", "2.0"),
    ]
    assert first.left_out == {"requests": "--exclude"}
    shipped = names(first.artifact)
    assert {"flashdep_a/__init__.py", "flashdep_b.py", "fetch.py", "flash_manifest.json"} <= shipped
    assert any(n.startswith("flashdep_a-1.0.dist-info/") for n in shipped)
    assert not any(n.startswith("numpy") for n in shipped)  # in the worker image
    assert not any(n.startswith(("bin/", ".lock")) for n in shipped)

    # Code-only change: nothing is installed again, and the artifact has the new code.
    fetch = project / "fetch.py"
    fetch.write_text(fetch.read_text() + "\n# code-only change\n")
    second = build(project, exclude=["requests"])
    assert second.deps_cached is True and second.sha256 != first.sha256
    with tarfile.open(second.artifact) as tar:
        member = tar.extractfile("fetch.py")
        assert member is not None and b"code-only change" in member.read()
        assert tar.extractfile("flashdep_b.py") is not None
    # Same inputs again: same bytes.
    assert build(project, exclude=["requests"]).sha256 == second.sha256

    # The worker's extractor reads the two-member archive (dependencies, then the project).
    extract = pytest.importorskip("flash_runtime.worker.extract")
    app = tmp_path / "app"
    extract.ensure_extracted(second.artifact, app)
    assert (app / "flashdep_a" / "__init__.py").read_text() == "VALUE = 'a'\n"
    assert "code-only change" in (app / "fetch.py").read_text()

    # --no-deps installs only what is listed.
    only = build(project, exclude=["requests"], no_deps=True)
    assert [p.name for p in only.packages] == ["flashdep-a"]


def test_dependencies_ship_unchecked_hash_bytecode_for_the_workers_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from flash_runtime.pack import deps

    wheels = tmp_path / "wheels"
    make_wheel(
        wheels,
        "flashdep-c",
        "1.0",
        {
            "flashdep_c/__init__.py": "from .core import VALUE\n",
            "flashdep_c/core.py": "VALUE = 'c'\n",
            "flashdep_c/tests/test_core.py": "def test(): pass\n",
            "flashdep_c/py2_only.py": "print 'never imported'\n",  # a syntax error in 3.x
        },
    )
    project = project_with(tmp_path, f"--no-index\n--find-links {wheels}\nflashdep-c\n")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    tag = f"cpython-{version.replace('.', '')}"
    result = build(project, exclude=["requests"], python_version=version)
    with tarfile.open(result.artifact) as tar:
        shipped = {m.name: m for m in tar.getmembers()}
        pyc = f"flashdep_c/__pycache__/core.{tag}.pyc"
        assert pyc in shipped and f"flashdep_c/__pycache__/__init__.{tag}.pyc" in shipped
        member = tar.extractfile(pyc)
        assert member is not None
        header = member.read(16)
    # PEP 552: flags 0b01 = hash-based, not checked against the source at import.
    assert int.from_bytes(header[4:8], "little") == 0b01
    assert not any("/tests/" in name and name.endswith(".pyc") for name in shipped)
    assert not any("py2_only" in name and name.endswith(".pyc") for name in shipped)
    # The package's size counts its bytecode.
    (package,) = [p for p in result.packages if p.name == "flashdep-c"]
    assert package.size > sum(
        shipped[n].size for n in shipped if n.startswith("flashdep_c/") and n.endswith(".py")
    )

    # No interpreter of the target Python here: sources only, and the build still works.
    monkeypatch.setattr(deps, "find_interpreter", lambda version: None)
    (project / "requirements.txt").write_text(
        f"--no-index\n--find-links {wheels}\nflashdep-c==1.0\n"  # another cache entry
    )
    plain = build(project, exclude=["requests"], python_version=version)
    assert not any(n.endswith(".pyc") for n in names(plain.artifact))


def test_homes_share_a_cache_dir_when_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    wheels = local_index(tmp_path)
    project = project_with(tmp_path, f"--no-index\n--find-links {wheels}\nflashdep-b\n")
    monkeypatch.setenv("FLASH_CACHE_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "first"))
    assert build(project, exclude=["requests"]).deps_cached is False
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "second"))
    assert build(project, exclude=["requests"]).deps_cached is True
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o700
    assert not (tmp_path / "second" / "cache").exists()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_unresolvable_dependency_shows_the_installers_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installer: str
) -> None:
    monkeypatch.setenv("FLASH_INSTALLER", installer)
    project = project_with(tmp_path, "--no-index\nflash-test-no-such-package==1.0\n")
    with pytest.raises(BuildError) as info:
        build(project)
    message = str(info.value)
    assert f"Installing dependencies with {installer} failed" in message
    assert "flash-test-no-such-package" in message
    assert "Requirements: flash-test-no-such-package==1.0, requests" in message
    assert not (project / ".flash" / "artifact.tar.gz").exists()


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_requests_from_pypi_is_bundled_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable from here")
    project = project_with(tmp_path, "")  # fetch.py declares dependencies=["requests"]
    cold = build(project, python_version="3.12")
    installed = {p.name.lower() for p in cold.packages}
    assert {"requests", "urllib3", "idna", "certifi", "charset-normalizer"} <= installed
    shipped = names(cold.artifact)
    assert "requests/__init__.py" in shipped and "urllib3/__init__.py" in shipped
    # charset-normalizer's compiled modules are Linux x86_64 builds for the target Python.
    assert any(n.endswith("cpython-312-x86_64-linux-gnu.so") for n in shipped)

    (project / "fetch.py").write_text((project / "fetch.py").read_text() + "\n# edit\n")
    warm = build(project, python_version="3.12")
    assert warm.deps_cached is True and warm.sha256 != cold.sha256

    monkeypatch.setenv("FLASH_MAX_ARTIFACT_MB", "0.2")
    with pytest.raises(BuildError) as info:
        build(project, python_version="3.12")
    message = str(info.value)
    assert "over the 0.2 MB artifact limit" in message
    assert "Largest packages" in message and "--exclude" in message
    assert "urllib3" in message or "requests" in message
