"""The packer: discovery, manifest, shipped files, determinism, errors, init, command line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import APPS

from flash_runtime import manifest as manifest_mod
from flash_runtime.pack import BuildError, BuildResult, InitError, build, init_project
from flash_runtime.pack.cli import build_command, init_command
from flash_runtime.pack.core import CORE_ZIP, VENDOR_DIR
from flash_runtime.pack.files import BUILTIN_IGNORES


def copy_app(name: str, dest: Path) -> Path:
    project = dest / name
    shutil.copytree(APPS / name, project, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    return project


def write_project(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def members(artifact: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(artifact) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(artifact: Path, name: str) -> str:
    with tarfile.open(artifact) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read().decode()


# -- the template ---------------------------------------------------------------------------


def test_init_template_builds_small_with_the_lb_echo_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = init_project(tmp_path / "hello-app")
    assert sorted(p.name for p in project.iterdir()) == sorted(
        [
            "gpu_worker.py",
            "cpu_worker.py",
            "lb_worker.py",
            "requirements.txt",
            "README.md",
            ".gitignore",
        ]
    )
    assert "# hello-app" in (project / "README.md").read_text()
    # No skip_deps: the template's only dependency (torch) is declared by the GPU endpoint, and
    # Runpod's GPU image has it. The artifact carries the worker core for Runpod's images
    # (about 1 MB compressed, mostly msgspec's and orjson's compiled modules; without the second
    # front end, which 1.x artifacts never use).
    result = build(project)
    assert result.image_target == "official" and 0 < result.core_bytes < 1.1 * 1024 * 1024
    with tarfile.open(result.artifact) as tar:
        core = tar.extractfile(f"{VENDOR_DIR}/{CORE_ZIP}")
        assert core is not None
        zipped = zipfile.ZipFile(io.BytesIO(core.read())).namelist()
    assert "flash_runtime/worker/router.py" in zipped
    assert not [n for n in zipped if n.endswith(("worker/apps.py", "appmanifest.py"))]
    assert result.size < result.core_bytes + 100 * 1024
    assert result.deps_cached is None and result.left_out == {
        "torch": "preinstalled in Runpod's GPU Flash image"
    }
    # For our own images (which hold flash_runtime) it stays a few kilobytes.
    ours = build(project, image_repository="registry.example/me", output=tmp_path / "ours.tgz")
    assert ours.core_bytes == 0 and ours.size < 100 * 1024
    py = ours.manifest.python_version
    assert (
        ours.manifest.resources["gpu_worker"].imageName
        == f"registry.example/me/flash:py{py}-latest"
    )
    assert ours.manifest.image_target == "flash"
    assert ours.manifest.image_repository == "registry.example/me"
    assert ours.left_out == {"torch": "preinstalled in the flash_runtime GPU image"}
    m = result.manifest
    assert set(m.resources) == {"gpu_worker", "cpu_worker", "lb_worker"}
    assert m.routes == {"lb_worker": {"GET /health": "health", "POST /process": "process"}}
    lb = m.resources["lb_worker"]
    assert lb.is_load_balanced and lb.resource_type == "CpuLiveLoadBalancer"
    assert m.resources["gpu_worker"].resource_type == "LiveServerless"
    assert m.resources["cpu_worker"].resource_type == "CpuLiveServerless"
    assert m.resources["gpu_worker"].imageName == f"runpod/flash:py{result.python_version}-latest"
    names = set(members(result.artifact))
    assert {"lb_worker.py", "gpu_worker.py", "cpu_worker.py", "flash_manifest.json"} <= names
    assert {"requirements.txt", "README.md"} <= names and ".gitignore" not in names

    # The echo route works as the benchmarks call it.
    monkeypatch.setenv("FLASH_CALLS", "local")
    sys.path.insert(0, str(project))
    try:
        import asyncio
        import importlib

        lb_worker = importlib.import_module("lb_worker")
        out = asyncio.run(lb_worker.process({"x": 1}))
        assert out["status"] == "success" and out["echo"] == {"x": 1}
    finally:
        sys.path.remove(str(project))
        sys.modules.pop("lb_worker", None)
    # The template's script runs as its docstring says, here with FLASH_CALLS=local.
    done = subprocess.run(
        [sys.executable, "cpu_worker.py"],
        cwd=project,
        env={**os.environ, "FLASH_CALLS": "local"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "'words': 6" in done.stdout, done.stdout


def test_init_refuses_a_non_empty_directory_without_force(tmp_path: Path) -> None:
    target = tmp_path / "existing"
    target.mkdir()
    init_project(target)  # an empty directory is fine
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(InitError, match=r"not empty.*--force"):
        init_project(target)
    init_project(target, force=True)
    assert (target / "mine.txt").read_text() == "keep me"

    result = CliRunner().invoke(init_command, [str(target)])
    assert result.exit_code == 1
    assert "already exists and is not empty" in result.output
    assert "Traceback" not in result.output


# -- discovery and the manifest ---------------------------------------------------------------


@pytest.fixture(scope="module")
def app_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildResult]:
    root = tmp_path_factory.mktemp("app")
    project = copy_app("pack_app", root)
    # Files that must never ship, created here (the repository's own ignore rules would keep
    # some of them out of git).
    write_project(
        project,
        {
            ".env": "RUNPOD_API_KEY=secret",
            ".env.production": "SECRET=1",
            "config/prod.env": "SECRET=2",
            "config/settings.toml": "debug = false",
            "data/big.bin": "x" * 1000,
            "notes/todo.txt": "flashignored",
            "app.log": "ignored",
            "keep.log": "negated back in",
            ".venv/lib/site.py": "venv",
            "myenv/pyvenv.cfg": "home = /usr",
            "myenv/lib/mod.py": "venv without a conventional name",
            "__pycache__/gpu_worker.cpython-311.pyc": "bytecode",
            ".git/config": "[core]",
            ".flash/old.txt": "previous build output",
        },
    )
    outside = root / "outside-secret.txt"
    outside.write_text("not part of the project")
    (project / "linked-secret.txt").symlink_to(outside)
    (project / "readme-link.md").symlink_to(project / "README.md")
    # On our own images, whose package set (numpy 2.2.6, torch 2.7.1) the packer knows.
    result = build(project, skip_deps=True, image_repository="registry.example/me")
    return project, result


def test_manifest_describes_every_endpoint(app_build: tuple[Path, BuildResult]) -> None:
    project, result = app_build
    m = result.manifest
    assert set(m.resources) == {"api", "counter", "embedder", "gpu_worker"}
    assert m.project_name == "pack_app" and m.version == "1.0"
    assert m.function_registry == {
        "Embedder": "embedder",
        "count": "counter",
        "generate": "api",
        "get_item": "api",
        "gpu_hello": "gpu_worker",
        "stream_numbers": "api",
    }
    assert m.routes == {
        "api": {
            "GET /items/{item_id}": "get_item",
            "GET /stream": "stream_numbers",
            "POST /generate": "generate",
        }
    }
    gpu = m.resources["gpu_worker"]
    assert gpu.resource_type == "LiveServerless" and not gpu.is_load_balanced
    assert (gpu.file_path, gpu.module_path) == ("gpu_worker.py", "gpu_worker")
    assert gpu.gpuIds == "ADA_24" and gpu.workersMax == 3 and gpu.env == {"MODEL": "tiny"}
    assert gpu.executionTimeoutMs == 30000
    assert gpu.imageName == f"registry.example/me/flash:py{m.python_version}-latest"
    assert gpu.makes_remote_calls is False
    # stream.py's __main__ block calls gpu_hello: a worker never runs it, so it does not count
    assert m.resources["counter"].makes_remote_calls is False
    [fn] = gpu.functions
    assert (fn.name, fn.module, fn.is_async, fn.is_class) == (
        "gpu_hello",
        "gpu_worker",
        True,
        False,
    )

    api = m.resources["api"]
    assert api.resource_type == "CpuLiveLoadBalancer" and api.is_load_balanced
    assert api.instanceIds == ["cpu5c-4-8"] and (api.workersMin, api.workersMax) == (1, 5)
    assert api.locations == "EU-RO-1" and api.scalerType == "REQUEST_COUNT"
    assert api.imageName == f"registry.example/me/flash-lb-cpu:py{m.python_version}-latest"
    assert api.makes_remote_calls is True  # generate() calls gpu_hello
    by_name = {f.name: f for f in api.functions}
    assert (by_name["get_item"].http_method, by_name["get_item"].http_path) == (
        "GET",
        "/items/{item_id}",
    )
    assert by_name["get_item"].is_async is False
    assert by_name["stream_numbers"].is_generator and by_name["stream_numbers"].is_async

    emb = m.resources["embedder"]
    assert (emb.file_path, emb.module_path) == ("models/embedder.py", "models.embedder")
    assert emb.max_concurrency == 4 and emb.gpuIds == "ADA_24,AMPERE_48"
    [cls] = emb.functions
    assert cls.is_class and cls.class_methods == ["embed", "embed_async"] and cls.is_async

    counter = m.resources["counter"]
    assert counter.resource_type == "CpuLiveServerless"
    assert counter.functions[0].is_generator and not counter.functions[0].is_async
    assert (counter.scalerType, counter.scalerValue) == ("REQUEST_COUNT", 2)

    # generated_at is an ISO UTC time; the manifest beside the artifact is the one inside it.
    assert m.generated_at is not None and m.generated_at.endswith("Z") and "T" in m.generated_at
    on_disk = (project / ".flash" / "flash_manifest.json").read_bytes()
    assert on_disk == read_member(result.artifact, "flash_manifest.json").encode()
    assert manifest_mod.loads(on_disk).source_fingerprint == m.source_fingerprint
    raw = json.loads(on_disk)
    assert raw["resources"]["gpu_worker"]["dependencies"] == [
        "torch",
        "flash-test-heavy-package==1.0",
    ]


def test_discovery_imports_only_endpoint_modules_and_never_runs_main(
    app_build: tuple[Path, BuildResult],
) -> None:
    # utils.py raises at import, scripts/client.py imports a missing package, gpu_worker.py's
    # __main__ block exits, gpu_hello imports a package that is installed nowhere: the build
    # above succeeded anyway.
    _, result = app_build
    assert "gpu_worker" in result.manifest.resources


def test_secrets_and_ignored_files_never_ship(app_build: tuple[Path, BuildResult]) -> None:
    _, result = app_build
    names = set(members(result.artifact))
    for never in (
        ".env",
        ".env.production",
        "config/prod.env",
        "data/big.bin",
        "notes/todo.txt",
        "app.log",
        ".venv/lib/site.py",
        "myenv/lib/mod.py",
        "__pycache__/gpu_worker.cpython-311.pyc",
        ".git/config",
        ".flash/old.txt",
        ".gitignore",
        ".flashignore",
        "linked-secret.txt",
        "utils.pyc",
    ):
        assert never not in names, never
    for shipped in (
        "api.py",
        "gpu_worker.py",
        "models/embedder.py",
        "stream.py",
        "utils.py",
        "scripts/client.py",
        "config/settings.toml",
        "keep.log",
        "README.md",
        "readme-link.md",
        "flash_manifest.json",
        "requirements.txt",
    ):
        assert shipped in names, shipped
    assert not any(n.startswith((".venv", "myenv", ".git/", "data")) for n in names)
    assert any("outside the project" in w for w in result.warnings)


def test_builtin_secret_rules_cannot_be_negated(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {
            "w.py": "from runpod_flash import Endpoint\n\n@Endpoint(name='w')\ndef w(): ...\n",
            ".gitignore": "!.env\n!*.env\n",
            ".flashignore": "!.env\n",
            ".env": "KEY=1",
            "sub/.env.local": "KEY=2",
        },
    )
    names = set(members(build(project, skip_deps=True).artifact))
    assert not any(".env" in n for n in names)
    assert ".env" in BUILTIN_IGNORES


def test_merged_requirements_file(app_build: tuple[Path, BuildResult]) -> None:
    _, result = app_build
    text = read_member(result.artifact, "requirements.txt")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    # numpy is pinned to another version than the image's 2.2.6: bundled, not dropped.
    assert lines == ["requests>=2.31", "numpy==2.0.0", "flash-test-heavy-package==1.0"]
    assert "torch" in text and "runpod-flash" in text  # as comments
    assert result.left_out == {
        "runpod-flash": "the Flash SDK: the artifact's runtime provides it",
        "torch": "preinstalled in the flash_runtime GPU image",
    }
    assert result.bundled == {"numpy==2.0.0": "the image has numpy 2.2.6; the artifact's copy wins"}


# -- determinism ------------------------------------------------------------------------------


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    project = copy_app("pack_app", tmp_path)
    first = build(project, skip_deps=True)
    first_bytes = first.artifact.read_bytes()
    second = build(project, skip_deps=True, output=tmp_path / "again.tar.gz")
    assert second.sha256 == first.sha256 == hashlib.sha256(first_bytes).hexdigest()
    assert second.artifact.read_bytes() == first_bytes

    # Entries: sorted, root-owned, normalised modes, no clock time, no timestamp in gzip.
    with tarfile.open(first.artifact) as tar:
        infos = tar.getmembers()
    names = [m.name for m in infos]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert {(m.uid, m.gid, m.uname, m.gname) for m in infos} == {(0, 0, "", "")}
    assert {m.mode for m in infos if m.isfile()} == {0o644}
    assert {m.mode for m in infos if m.isdir()} == {0o755}
    # One mtime per part: the vendored worker core's (derived from its cache key), the project's.
    core_part = [m for m in infos if m.name.split("/")[0] == ".flash-worker"]
    project_part = [m for m in infos if m.name.split("/")[0] != ".flash-worker"]
    assert core_part and len({m.mtime for m in core_part}) == 1
    assert len({m.mtime for m in project_part}) == 1
    assert first_bytes[4:8] == b"\0\0\0\0"  # gzip MTIME

    # A code change changes the bytes and the fingerprint; reverting restores both.
    worker = project / "stream.py"
    original = worker.read_text()
    stat = worker.stat()
    worker.write_text(original + "\n# changed\n")
    changed = build(project, skip_deps=True)
    assert changed.sha256 != first.sha256
    assert changed.manifest.source_fingerprint != first.manifest.source_fingerprint
    worker.write_text(original)
    os.utime(worker, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert build(project, skip_deps=True).sha256 == first.sha256


def test_the_bytes_depend_on_the_sources_not_on_mtimes_or_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Touching every file, or building a fresh copy later, gives the same artifact; its time
    is SOURCE_DATE_EPOCH, else the git HEAD's commit time, else 1980-01-01."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    project = copy_app("lb_echo", tmp_path)
    first = build(project, skip_deps=True)
    assert first.manifest.generated_at == "1980-01-01T00:00:00Z"
    later = time.time() + 86400
    for path in project.rglob("*"):
        os.utime(path, (later, later))
    assert build(project, skip_deps=True).sha256 == first.sha256
    copy = copy_app("lb_echo", tmp_path / "elsewhere")
    assert build(copy, skip_deps=True).sha256 == first.sha256

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pinned = build(project, skip_deps=True)
    assert pinned.manifest.generated_at == "2023-11-14T22:13:20Z"
    with tarfile.open(pinned.artifact) as tar:
        assert {m.mtime for m in tar.getmembers() if m.name.split("/")[0] != ".flash-worker"} == {
            1700000000
        }
    monkeypatch.delenv("SOURCE_DATE_EPOCH")

    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    commit_env = {**os.environ, "GIT_COMMITTER_DATE": "@1750000000 +0000"}
    subprocess.run([*git, "commit", "-qm", "x"], check=True, env=commit_env)
    assert build(project, skip_deps=True).manifest.generated_at == "2025-06-15T15:06:40Z"


# -- errors -----------------------------------------------------------------------------------


def test_no_endpoints(tmp_path: Path) -> None:
    project = copy_app("pack_empty", tmp_path)
    with pytest.raises(BuildError, match=r"No endpoints found .*1 Python file"):
        build(project, skip_deps=True)


def test_endpoint_files_excluded_by_ignore_rules_are_not_found(tmp_path: Path) -> None:
    project = copy_app("pack_duplicate", tmp_path)
    write_project(project, {".flashignore": "*.py\n"})
    with pytest.raises(BuildError, match=r"No endpoints found.*\.flashignore"):
        build(project, skip_deps=True)


def test_import_errors_name_file_line_and_advice(tmp_path: Path) -> None:
    project = copy_app("pack_import_error", tmp_path)
    with pytest.raises(BuildError) as info:
        build(project, skip_deps=True)
    message = str(info.value)
    assert "2 modules failed to import" in message
    assert (
        "worker.py:1: ModuleNotFoundError: No module named 'flash_test_missing_heavy_lib'"
        in message
    )
    assert "Import heavy packages inside the function" in message
    # An SDK error at decoration time keeps the user's file:line.
    assert "broken.py:11: ConfigurationError" in message and "declared twice" in message
    assert str(project) not in message  # paths relative to the project


def test_a_name_the_sdk_does_not_have_is_not_called_a_missing_package(tmp_path: Path) -> None:
    """`from runpod_flash import Nope`: runpod_flash is installed; the name is what is missing."""
    project = write_project(
        tmp_path / "p",
        {"w.py": "from runpod_flash import Endpoint, ServerlessScalerType, Nope\n"},
    )
    with pytest.raises(BuildError) as info:
        build(project, skip_deps=True)
    message = str(info.value)
    assert "cannot import name 'Nope' from 'runpod_flash'" in message
    assert "not installed" not in message and "differences.md" in message


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {"bad.py": "from runpod_flash import Endpoint\n\n\ndef oops(:\n    pass\n"},
    )
    with pytest.raises(BuildError, match=r"bad\.py:4: SyntaxError"):
        build(project, skip_deps=True)


def test_module_named_like_an_installed_one(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {"json.py": "from runpod_flash import Endpoint\n\n@Endpoint(name='j')\ndef j(): ...\n"},
    )
    with pytest.raises(BuildError, match=r"json: NameClash: `import json` gives .*rename"):
        build(project, skip_deps=True)


def test_duplicate_queue_based_names(tmp_path: Path) -> None:
    project = copy_app("pack_duplicate", tmp_path)
    with pytest.raises(BuildError) as info:
        build(project, skip_deps=True)
    message = str(info.value)
    assert "queue-based endpoint 'inference' is given 2 functions" in message
    assert "preprocess (first.py:4)" in message and "run_model (second.py:4)" in message


def test_duplicate_load_balanced_names_and_function_names(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {
            "a.py": (
                "from runpod_flash import Endpoint\n"
                "api = Endpoint(name='api', cpu='cpu3c-1-2')\n"
                "@api.get('/a')\n"
                "def handler(): ...\n"
            ),
            "b.py": (
                "from runpod_flash import Endpoint\n"
                "api = Endpoint(name='api', cpu='cpu3c-1-2')\n"
                "@api.get('/b')\n"
                "def other(): ...\n"
            ),
            "c.py": (
                "from runpod_flash import Endpoint\n"
                "@Endpoint(name='c', cpu='cpu3c-1-2')\n"
                "def handler(): ...\n"
            ),
        },
    )
    with pytest.raises(BuildError) as info:
        build(project, skip_deps=True)
    message = str(info.value)
    assert "endpoint name 'api' is declared 2 times: a.py:2 (load-balanced), b.py:2" in message
    assert (
        "function name 'handler' is served by endpoints 'api' (a.py:3) and 'c' (c.py:2)" in message
    )


def test_route_conflicts(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {
            "api.py": (
                "from runpod_flash import Endpoint\n"
                "api = Endpoint(name='api', cpu='cpu3c-1-2')\n"
                "@api.get('/items/{item_id}')\n"
                "def by_id(item_id: str): ...\n"
                "@api.get('/items/{name}')\n"
                "def by_name(name: str): ...\n"
            )
        },
    )
    with pytest.raises(BuildError, match=r"route GET /items/\{name\} \(api\.py:5\) conflicts with"):
        build(project, skip_deps=True)


def test_nested_function_is_rejected_with_its_line(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {
            "w.py": (
                "from runpod_flash import Endpoint\n"
                "def make():\n"
                "    @Endpoint(name='inner', cpu='cpu3c-1-2')\n"
                "    def inner(): ...\n"
                "    return inner\n"
                "make()\n"
            )
        },
    )
    with pytest.raises(BuildError, match=r"w\.py:3: inner .* not a module-level name"):
        build(project, skip_deps=True)


def test_discovery_that_hangs_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_app("pack_hang", tmp_path)
    monkeypatch.setenv("FLASH_DISCOVERY_TIMEOUT", "1")
    with pytest.raises(BuildError) as info:
        build(project, skip_deps=True)
    message = str(info.value)
    assert "timed out after 1 s while importing module 'slow' (stuck at slow.py:5)" in message
    assert "FLASH_DISCOVERY_TIMEOUT" in message


def test_size_limit_lists_the_largest_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = copy_app("pack_deps", tmp_path)
    (project / "weights").mkdir()
    (project / "weights" / "model.bin").write_bytes(os.urandom(64 * 1024))
    monkeypatch.setenv("FLASH_MAX_ARTIFACT_MB", "0.05")
    with pytest.raises(BuildError) as info:
        build(project, skip_deps=True)
    message = str(info.value)
    assert "over the 0.05 MB artifact limit (FLASH_MAX_ARTIFACT_MB)" in message
    assert "weights (project)" in message and "--exclude" in message
    assert not (project / ".flash" / "artifact.tar.gz").exists()


def test_bad_python_version(tmp_path: Path) -> None:
    project = copy_app("pack_deps", tmp_path)
    with pytest.raises(BuildError, match=r"worker images for Python 3\.11, 3\.12, 3\.13"):
        build(project, skip_deps=True, python_version="3.10")
    with pytest.raises(BuildError, match=r"major\.minor"):
        build(project, skip_deps=True, python_version="three")
    result = build(project, skip_deps=True, python_version="3.12")
    assert result.manifest.python_version == "3.12"
    assert result.manifest.resources["fetch"].imageName == "runpod/flash-cpu:py3.12-latest"


# -- command line -----------------------------------------------------------------------------


def test_build_command_success_json_and_errors(tmp_path: Path) -> None:
    project = copy_app("pack_deps", tmp_path)
    runner = CliRunner()
    result = runner.invoke(build_command, [str(project), "--skip-deps", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["endpoints"] == {"fetch": {"type": "qb", "gpu": False, "functions": ["fetch"]}}
    assert Path(summary["artifact"]).is_file()

    out = tmp_path / "out" / "custom.tar.gz"
    result = runner.invoke(build_command, [str(project), "--skip-deps", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "Built pack_deps" in result.output and "fetch" in result.output

    empty = copy_app("pack_empty", tmp_path)
    result = runner.invoke(build_command, [str(empty), "--skip-deps"])
    assert result.exit_code == 1
    assert "Error: No endpoints found" in result.output and "Traceback" not in result.output
    result = runner.invoke(build_command, [str(empty), "--skip-deps", "--json"])
    assert result.exit_code == 1
    error = json.loads(result.stdout.splitlines()[0])["error"]
    assert error["type"] == "BuildError" and "No endpoints found" in error["message"]


def test_commands_find_the_project_from_a_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below a project (marked by a build's manifest, or a .flashignore) commands work on the
    project; a pyproject.toml or requirements.txt above does not count (a monorepo's)."""
    from flash_runtime.pack.project import default_app_name, find_root

    project = copy_app("pack_deps", tmp_path)
    sub = project / "deep" / "er"
    sub.mkdir(parents=True)
    assert find_root(sub) == sub.resolve()  # not built yet, no .flashignore: the directory itself
    (project / ".flashignore").write_text("deep/\n")
    assert find_root(sub) == project.resolve() and default_app_name(None, sub) == "pack_deps"
    (project / ".flashignore").unlink()
    build(project, skip_deps=True)  # now .flash/flash_manifest.json marks it
    monkeypatch.chdir(sub)
    result = CliRunner().invoke(build_command, ["--skip-deps", "--json"])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.output)["artifact"]).parent == project.resolve() / ".flash"
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'monorepo'\n")
    assert find_root(tmp_path / "pack_deps" / "deep") == project.resolve()


def test_python_dash_m(tmp_path: Path) -> None:
    project = copy_app("pack_deps", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "flash_runtime.pack", "--skip-deps", "--python-version", "3.12"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (project / ".flash" / "artifact.tar.gz").is_file()
    assert (
        json.loads((project / ".flash" / "flash_manifest.json").read_text())["python_version"]
        == "3.12"
    )


def test_a_custom_image_gets_the_core_and_no_leave_outs(tmp_path: Path) -> None:
    """Endpoint(image=...) runs on an image whose contents the packer cannot know: the artifact
    carries the worker core and every requirement but the SDK, whatever the target."""
    project = write_project(
        tmp_path / "p",
        {
            "w.py": (
                "from runpod_flash import Endpoint\n\n"
                "@Endpoint(name='w', image='me/custom:1', dependencies=['numpy', 'runpod-flash'])\n"
                "def w(): ...\n"
            ),
        },
    )
    result = build(project, skip_deps=True, image_repository="registry.example/me")
    assert result.core_bytes > 0
    assert result.left_out == {"runpod-flash": "the Flash SDK: the artifact's runtime provides it"}
    assert result.requirements == ["numpy"]
    assert result.manifest.resources["w"].imageName == "me/custom:1"
    assert "handler_w.py" in members(result.artifact)


def test_an_entry_file_name_taken_by_the_project_is_an_error(tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "p",
        {
            "w.py": "from runpod_flash import Endpoint\n\n@Endpoint(name='w')\ndef w(): ...\n",
            "handler_w.py": "# mine\n",
        },
    )
    with pytest.raises(BuildError, match=r"handler_w\.py: flash build writes this file"):
        build(project, skip_deps=True)


def test_the_worker_core_is_vendored_offline_from_this_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no index to install from, this environment's own msgspec, orjson, cachetools and
    starlette are vendored (it is the workers' kind of machine); without their dist-info."""
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLASH_CACHE_DIR")  # a cache of its own: the core is made here
    monkeypatch.setenv("FLASH_INSTALLER", "pip")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    project = write_project(
        tmp_path / "p",
        {"w.py": "from runpod_flash import Endpoint\n\n@Endpoint(name='w')\ndef w(): ...\n"},
    )
    result = build(project, skip_deps=True)
    names = set(members(result.artifact))
    assert result.core_bytes > 0
    for package in ("msgspec", "orjson"):  # compiled: files
        assert f".flash-worker/{package}/__init__.py" in names
    assert not any(".dist-info" in n for n in names if n.startswith(".flash-worker/"))
    # The pure-Python packages are one zip, with bytecode beside the sources (zipimport's
    # layout) for the workers' Python, and nothing of theirs outside it.
    with tarfile.open(result.artifact) as tar:
        member = tar.extractfile(".flash-worker/core.zip")
        assert member is not None
        zipped = zipfile.ZipFile(io.BytesIO(member.read())).namelist()
    for package in ("flash_runtime", "runpod_flash", "cachetools", "starlette"):
        assert f"{package}/__init__.py" in zipped and f"{package}/__init__.pyc" in zipped
        assert not any(n.startswith(f".flash-worker/{package}/") for n in names)
    assert "flash_runtime/worker/handover.pyc" in zipped
    assert not any("__pycache__" in n for n in zipped)


# runpod-flash 1.21's provisioner (runtime/resource_provisioner.py) rebuilds a resource from a
# manifest only when its resource_type is one of these.
REFERENCE_PROVISIONABLE = {
    "ServerlessResource",
    "LiveServerless",
    "CpuLiveServerless",
    "LoadBalancerSlsResource",
    "LiveLoadBalancer",
    "CpuLiveLoadBalancer",
    "Endpoint",
}


def test_resource_types_are_ones_the_reference_provisions() -> None:
    from flash_runtime.pack.images import resource_type

    names = {
        resource_type(gpu=gpu, load_balanced=lb) for gpu in (True, False) for lb in (True, False)
    }
    assert len(names) == 4 and names <= REFERENCE_PROVISIONABLE
