"""The pieces of ``flash run`` on their own: request-tagged worker output, the OpenAPI document,
the deployer's ``live-`` names, the log tailer, the file watcher, port binding, the project lock.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS

from flash_runtime.deploy.deployer import _plan
from flash_runtime.devserver import openapi, watch
from flash_runtime.devserver.logs import LogTailer
from flash_runtime.devserver.session import DevServerError, bind, project_lock
from flash_runtime.devserver.terminal import Terminal
from flash_runtime.protocol.local import is_loopback
from flash_runtime.worker import request_context
from flash_runtime.worker.router import Router

# -- worker side: the request id on output lines ---------------------------------------------


def test_lines_written_during_a_request_start_with_its_id() -> None:
    out = io.StringIO()
    stream = request_context.TaggedStream(out)
    stream.write("before\n")
    token = request_context.current.set("r1")
    try:
        stream.write("one\ntwo\n")
        stream.write("part")
        stream.write("ial\n")
        stream.writelines(["x\n", ""])
    finally:
        request_context.current.reset(token)
    stream.write("after\n")
    assert out.getvalue() == "before\n[r1] one\n[r1] two\n[r1] partial\n[r1] x\nafter\n"
    assert stream.getvalue() == out.getvalue()  # everything else is the wrapped stream's


def test_the_router_makes_the_request_id_current_for_the_function() -> None:
    seen: dict[str, Any] = {}

    async def probe() -> dict[str, str | None]:
        seen["async"] = request_context.current.get()
        return {}

    def probe_sync() -> dict[str, str | None]:
        seen["sync"] = request_context.current.get()  # in a worker thread: context copied
        return {}

    router = Router.from_functions({"GET /a": probe, "GET /s": probe_sync})

    async def request(path: str, request_id: bytes) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "headers": [(b"x-request-id", request_id)],
        }

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            pass

        await asyncio.create_task(router(scope, receive, send))

    async def main() -> None:
        await request("/a", b"req-a")
        await request("/s", b"req-s")

    asyncio.run(main())
    assert seen == {"async": "req-a", "sync": "req-s"}


# -- deployer: live- names -----------------------------------------------------------------


def _manifest(tmp_path: Path) -> Any:
    from flash_runtime.pack import build

    project = tmp_path / "proj"
    shutil.copytree(APPS / "dev_app", project)
    return build(project, skip_deps=True).manifest


def test_the_plan_maps_prefixed_endpoint_names_to_resources(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    environment = {
        "id": "env1",
        "name": "live",
        "endpoints": [
            {"id": "e1", "name": "live-gpu_worker"},
            {"id": "e2", "name": "lb_worker"},  # not ours: no prefix
            {"id": "e3", "name": "live-gone"},  # no such resource any more
        ],
    }
    steps, to_delete = _plan(manifest, environment, {}, app="a", api_key="k", name_prefix="live-")
    by_resource = {s.resource: s for s in steps}
    assert by_resource["gpu_worker"].existing_id == "e1"
    assert by_resource["lb_worker"].existing_id is None
    assert by_resource["lb_worker"].payload["name"] == "live-lb_worker"
    env = {kv["key"]: kv["value"] for kv in by_resource["lb_worker"].payload["template"]["env"]}
    assert env["FLASH_RESOURCE_NAME"] == "lb_worker"
    assert sorted(e["id"] for e in to_delete) == ["e2", "e3"]
    plain, _ = _plan(manifest, environment, {}, app="a", api_key="k")
    assert {s.payload["name"] for s in plain} == {"gpu_worker", "lb_worker", "shouter", "extra-web"}


# -- OpenAPI ----------------------------------------------------------------------------------


def _document(tmp_path: Path, app: str) -> dict[str, Any]:
    from flash_runtime.pack import build

    project = tmp_path / app
    shutil.copytree(APPS / app, project)
    manifest = build(project, skip_deps=True).manifest
    report = asyncio.run(openapi.compute_schemas(project, manifest))
    assert report["errors"] == []
    return openapi.build_document(manifest, report, title="t", version="1")


def test_the_document_follows_how_the_worker_reads_arguments(tmp_path: Path) -> None:
    doc = _document(tmp_path, "dev_schemas")
    place = doc["paths"]["/api/orders/{shop_id}"]["post"]
    assert place["summary"] == "Place an order."
    assert place["parameters"] == [
        {
            "name": "shop_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer"},
            "example": 1,  # filled in, so that "Try it out" works as it stands
        }
    ]
    body = place["requestBody"]["content"]["application/json"]["schema"]
    example = place["requestBody"]["content"]["application/json"]["example"]
    assert set(example) == {"order", "note"} and example["note"] == ""
    assert set(body["properties"]) == {"order", "note"}  # the Request parameter is not a field
    assert body["required"] == ["order"]
    assert body["properties"]["note"] == {"type": "string", "default": ""}
    order = body["properties"]["order"]["$ref"].rsplit("/", 1)[1]
    assert doc["components"]["schemas"][order]["required"] == ["sku"]
    ok = place["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"type": "object", "additionalProperties": {"type": "integer"}}

    anything = doc["paths"]["/api/anything"]["post"]
    assert anything["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"]
    assert "content" not in doc["paths"]["/api/text"]["get"]["responses"]["200"]
    stream = doc["paths"]["/api/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert stream["parameters"][0]["name"] == "n" and stream["parameters"][0]["in"] == "query"

    runsync = doc["paths"]["/jobs/runsync"]["post"]
    assert runsync["summary"] == "Text jobs."
    options = runsync["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "input"
    ]["anyOf"]
    methods = {o["properties"]["method"]["const"]: o for o in options}
    assert set(methods) == {"upper", "repeat"}
    assert methods["repeat"]["required"] == ["method", "text"]
    assert methods["repeat"]["properties"]["times"]["default"] == 2


def test_a_module_that_no_longer_imports_costs_only_its_schemas(tmp_path: Path) -> None:
    from flash_runtime.pack import build

    project = tmp_path / "p"
    shutil.copytree(APPS / "dev_app", project)
    manifest = build(project, skip_deps=True).manifest
    (project / "lb_worker.py").write_text("raise RuntimeError('boom')\n")
    report = asyncio.run(openapi.compute_schemas(project, manifest))
    assert any("RuntimeError: boom" in e for e in report["errors"])
    assert "gpu_worker:gpu_hello" in report["functions"]
    doc = openapi.build_document(manifest, report, title="t", version="1")
    assert "boom" in doc["info"]["description"]
    assert "post" in doc["paths"]["/lb_worker/process"]


# -- terminal side ----------------------------------------------------------------------------


def _terminal() -> tuple[Terminal, io.StringIO]:
    from rich.console import Console

    out = io.StringIO()
    return Terminal(Console(file=out, width=60, color_system=None)), out


def test_the_tailer_prints_complete_new_lines_with_the_endpoint_name(tmp_path: Path) -> None:
    """Through the platform's /platform/logs: what was there before tracking is skipped, a
    partial line waits for its end, a copy-truncated file is read again from its start."""
    from flash_runtime.testing.platform import InProcessPlatform

    terminal, out = _terminal()
    with InProcessPlatform(tmp_path / "home") as platform:
        logs = platform.config.logs_dir
        (logs / "ep1").mkdir(parents=True)
        (logs / "ep1" / "w0.log").write_text("an earlier session\n")
        new = logs / "ep1" / "w1.log"

        async def follow() -> list[str]:
            tailer = LogTailer(platform.url, platform.config.api_key, terminal)
            tailer.track({"ep1": "api"})
            await tailer.poll()
            assert out.getvalue() == ""
            new.write_text("[r1] hello\npart")
            await tailer.poll()
            with new.open("a") as f:
                f.write("ial and a very long line " + "x" * 80 + "\n")
            await tailer.poll()
            new.write_text("after rotation\n")  # copy-truncated: read from the start
            await tailer.poll()
            lines = out.getvalue().splitlines()
            tailer.track({})
            new.write_text("after rotation\nignored\n")
            await tailer.poll()
            await tailer.close()
            return lines

        lines = asyncio.run(follow())
    assert lines == [
        "[api] [r1] hello",
        "[api] partial and a very long line " + "x" * 80,
        "[api] after rotation",
    ]
    assert len(out.getvalue().splitlines()) == 3


def test_the_watcher_reports_project_changes_but_not_build_output(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / ".flash").mkdir(parents=True)
    (project / "__pycache__").mkdir()

    async def main() -> list[Path]:
        stop = asyncio.Event()
        batches = watch.changes(project, stop)

        async def touch() -> None:
            await asyncio.sleep(0.3)
            (project / ".flash" / "artifact.tar.gz").write_text("x")
            (project / "__pycache__" / "m.pyc").write_text("x")
            (project / "m.py").write_text("x = 1\n")

        task = asyncio.create_task(touch())
        async with asyncio.timeout(20):
            batch = await anext(batches)
        stop.set()
        await task
        await batches.aclose()
        return batch

    assert asyncio.run(main()) == [project / "m.py"]


def test_shipped_files_follow_the_packers_ignore_rules(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "m.py").write_text("x = 1\n")
    (project / ".gitignore").write_text("scratch/\n")
    first, shipped = watch.shipped_files(project)
    assert shipped == {"m.py"}
    (project / "scratch").mkdir()
    (project / "scratch" / "notes.py").write_text("y = 2\n")
    (project / ".env").write_text("SECRET=1\n")
    assert watch.shipped_files(project)[0] == first
    (project / "m.py").write_text("x = 2\n")
    assert watch.shipped_files(project)[0] != first


# -- binding and locking ----------------------------------------------------------------------


def test_a_busy_port_is_an_error_when_asked_for_and_skipped_by_default() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevServerError, match=f"127.0.0.1:{port}.*--port"):
            bind("127.0.0.1", port, explicit=True)
        sock = bind("127.0.0.1", port, explicit=False)
        try:
            assert sock.getsockname()[1] != port
        finally:
            sock.close()


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_one_flash_run_per_project(tmp_path: Path) -> None:
    with project_lock(tmp_path):
        second = project_lock(tmp_path)
        with pytest.raises(DevServerError, match="another `flash run`"):
            second.__enter__()
    with project_lock(tmp_path):
        pass


def test_pydantic_models_are_documented_with_pydantics_schemas(tmp_path: Path) -> None:
    doc = _document(tmp_path, "pydantic_models")
    item = doc["components"]["schemas"]["Item"]
    assert (
        item["required"] == ["name", "price"]
        and item["properties"]["price"]["exclusiveMinimum"] == 0
    )
    # A lone model argument is the whole body, as in FastAPI; the example fits it.
    create = doc["paths"]["/models-api/items"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/Item"}
    assert create["example"] == {"name": "name", "price": 1.5, "tags": []}
    update = doc["paths"]["/models-api/items/{item_id}"]["put"]
    assert update["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("Item")
    orders = doc["paths"]["/models-api/orders"]["post"]["requestBody"]["content"]
    items = orders["application/json"]["schema"]["properties"]["items"]
    assert items == {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}
    runsync = doc["paths"]["/models-quote/runsync"]["post"]["requestBody"]["content"]
    assert runsync["application/json"]["schema"]["properties"]["input"]["$ref"].endswith("Item")
    assert runsync["application/json"]["example"] == {
        "input": {"name": "name", "price": 1.5, "tags": []}
    }
