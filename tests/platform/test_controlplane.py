"""The control plane over real HTTP: a Starlette app with its routes, served by uvicorn on a free
port, driven by the project's own control-plane client. The runtime is a recording test double
(the boundary of ``model.Runtime``): the control plane's job is to decide what runs, and these
tests check what it hands the runtime."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import ControlPlaneServer, RecordingRuntime

from flash_runtime.platform import controlplane
from flash_runtime.platform.db import connect
from flash_runtime.protocol.controlplane import (
    AuthenticationError,
    ControlPlaneClient,
    GraphQLRequestError,
    UnreachableError,
)
from flash_runtime.protocol.target import Target
from flash_runtime.testing.net import free_port


def manifest_for(
    *resources: str, lb: tuple[str, ...] = (), project: str = "demo"
) -> dict[str, Any]:
    """A valid manifest with one function per resource (``lb`` ones load-balanced)."""
    out: dict[str, Any] = {
        "version": "1.0",
        "python_version": "3.11",
        "generated_at": "2025-01-01T00:00:00Z",
        "project_name": project,
        "resources": {},
        "function_registry": {},
        "routes": {},
    }
    for name in (*resources, *lb):
        is_lb = name in lb
        fn: dict[str, Any] = {
            "name": f"{name}_fn",
            "module": name,
            "is_async": True,
            "is_class": False,
        }
        if is_lb:
            fn |= {"http_method": "POST", "http_path": f"/{name}"}
            out["routes"][name] = {f"POST /{name}": f"{name}_fn"}
        out["resources"][name] = {
            "resource_type": "Endpoint",
            "file_path": f"{name}.py",
            "module_path": name,
            "functions": [fn],
            "is_load_balanced": is_lb,
            "max_concurrency": 3,
            "imageName": "runpod/flash-cpu:py3.11-latest",
            "instanceIds": ["cpu3c-1-2"],
        }
        out["function_registry"][f"{name}_fn"] = name
    return out


def tarball(content: bytes = b"print('hi')\n") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("main.py")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


async def upload_build(
    client: ControlPlaneClient, app_id: str, manifest: dict[str, Any], data: bytes, tmp: Path
) -> dict[str, Any]:
    path = tmp / f"artifact-{time.monotonic_ns()}.tar.gz"
    path.write_bytes(data)
    upload = await client.prepare_upload(app_id, len(data))
    await client.upload(upload["uploadUrl"], path)
    return await client.finalize_upload(app_id, upload["objectKey"], manifest)


def endpoint_payload(
    name: str, env_id: str, *, resource: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "flashEnvironmentId": env_id,
        "template": {
            "name": f"t-{name}-{env_id[:8]}",
            "imageName": "runpod/flash-cpu:py3.11-latest",
            "env": [
                {"key": "FLASH_RESOURCE_NAME", "value": resource or name},
                {"key": "MODE", "value": "x"},
            ],
        },
        "instanceIds": ["cpu3c-1-2"],
        "workersMin": 0,
        "workersMax": 2,
        **extra,
    }


def http(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# authentication and the wire format


def test_graphql_requires_the_platform_key(control_plane: ControlPlaneServer) -> None:
    url = f"{control_plane.config.url}/graphql"
    body = orjson.dumps({"query": "{ myself { id } }"})
    status, raw = http(url, method="POST", data=body, headers={"Content-Type": "application/json"})
    assert status == 401
    assert "flash platform status" in orjson.loads(raw)["errors"][0]["message"]

    status, raw = http(f"{url}?api_key={control_plane.config.api_key}", method="POST", data=body)
    assert status == 200 and orjson.loads(raw) == {"data": {"myself": {"id": "local"}}}

    wrong = Target(**{**control_plane.target.__dict__, "api_key": "nope"})
    with pytest.raises(AuthenticationError, match="flash platform status"):
        asyncio.run(list_apps(wrong))


async def list_apps(target: Target) -> object:
    async with ControlPlaneClient(target) as client:
        return await client.list_apps()


def test_bad_documents_are_400_with_graphql_errors(control_plane: ControlPlaneServer) -> None:
    url = f"{control_plane.config.url}/graphql"
    headers = {"Authorization": f"Bearer {control_plane.config.api_key}"}
    status, raw = http(url, method="POST", data=b'{"query": "{ myself { "}', headers=headers)
    assert status == 400 and "Syntax Error" in orjson.loads(raw)["errors"][0]["message"]
    status, raw = http(url, method="POST", data=b'{"query": "{ myself { url } }"}', headers=headers)
    assert status == 400 and "Cannot query field 'url'" in orjson.loads(raw)["errors"][0]["message"]
    status, raw = http(url, method="POST", data=b"not json", headers=headers)
    assert (
        status == 400
        and orjson.loads(raw)["errors"][0]["message"] == "the request body is not JSON"
    )


def test_a_stopped_platform_is_reported_with_what_to_do(tmp_path: Path) -> None:
    target = Target(
        platform="local",
        api_url=f"http://127.0.0.1:{free_port()}",
        api_key="k",
        queue_url_base="",
        lb_url_template="",
        unreachable_hint="is the platform running? Start it with `flash platform start`",
        key_hint="",
    )
    with pytest.raises(UnreachableError, match="flash platform start"):
        asyncio.run(list_apps(target))


# apps and environments


def test_apps_and_environments(control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    app = cp.call(lambda c: c.create_app("shop"))
    with pytest.raises(GraphQLRequestError, match="an app named 'shop' already exists"):
        cp.call(lambda c: c.create_app("shop"))
    with pytest.raises(GraphQLRequestError, match="invalid app name"):
        cp.call(lambda c: c.create_app("my shop"))
    with pytest.raises(GraphQLRequestError, match="app not found"):
        cp.call(lambda c: c.app_by_name("nothing"))

    dev = cp.call(lambda c: c.create_environment(app["id"], "dev"))
    cp.call(lambda c: c.create_environment(app["id"], "production"))
    with pytest.raises(GraphQLRequestError, match="already has an environment 'dev'"):
        cp.call(lambda c: c.create_environment(app["id"], "dev"))

    found = cp.call(lambda c: c.app_by_name("shop"))
    assert [e["name"] for e in found["flashEnvironments"]] == ["dev", "production"]
    assert {e["state"] for e in found["flashEnvironments"]} == {"pending"}
    by_name = cp.call(lambda c: c.environment_by_name(app["id"], "dev"))
    assert by_name["id"] == dev["id"] and by_name["endpoints"] == []
    with pytest.raises(GraphQLRequestError, match="app 'shop' has no environment 'qa'"):
        cp.call(lambda c: c.environment_by_name(app["id"], "qa"))

    cp.call(lambda c: c.delete_environment(dev["id"]))
    assert [e["name"] for e in cp.call(lambda c: c.list_apps())[0]["flashEnvironments"]] == [
        "production"
    ]
    cp.call(lambda c: c.delete_app(app["id"]))
    assert cp.call(lambda c: c.list_apps()) == []


# artifacts and builds


def test_upload_finalize_and_download(control_plane: ControlPlaneServer, tmp_path: Path) -> None:
    cp = control_plane
    app = cp.call(lambda c: c.create_app("shop"))
    env = cp.call(lambda c: c.create_environment(app["id"], "production"))
    data = tarball()
    build = cp.call(lambda c: upload_build(c, app["id"], manifest_for("worker"), data, tmp_path))
    assert build["manifest"]["resources"]["worker"]["max_concurrency"] == 3
    stored = list(cp.config.artifacts_dir.glob("*.tar.gz"))
    assert len(stored) == 1 and stored[0].read_bytes() == data

    cp.call(lambda c: c.deploy_build(env["id"], build["id"]))
    query = "query q($id: String!) { flashEnvironment(flashEnvironmentId: $id) { state activeBuildId activeArtifact { downloadUrl } } }"
    got = cp.call(lambda c: c.execute(query, {"id": env["id"]}))["flashEnvironment"]
    assert got["state"] == "deployed" and got["activeBuildId"] == build["id"]
    assert http(got["activeArtifact"]["downloadUrl"]) == (200, data)
    tampered = got["activeArtifact"]["downloadUrl"].replace("signature=", "signature=0")
    assert http(tampered)[0] == 403

    # The same bytes again: a second build sharing the stored file.
    again = cp.call(lambda c: upload_build(c, app["id"], manifest_for("worker"), data, tmp_path))
    assert again["id"] != build["id"] and len(list(cp.config.artifacts_dir.glob("*.tar.gz"))) == 1


def test_upload_url_checks(
    control_plane: ControlPlaneServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp = control_plane
    app = cp.call(lambda c: c.create_app("shop"))
    data = tarball()

    def prepare(size: int) -> dict[str, Any]:
        return cp.call(lambda c: c.prepare_upload(app["id"], size))

    upload = prepare(len(data))
    assert http(upload["uploadUrl"], method="PUT", data=data[:-1])[0] == 400
    assert http(upload["uploadUrl"], method="PUT", data=data + b"x")[0] == 400  # Content-Length
    assert http(upload["uploadUrl"], method="PUT", data=b"x" * len(data))[0] == 400  # not gzip
    with pytest.raises(GraphQLRequestError, match="PUT the tarball to the uploadUrl first"):
        cp.call(lambda c: c.finalize_upload(app["id"], upload["objectKey"], manifest_for("w")))
    assert http(upload["uploadUrl"], method="PUT", data=data)[0] == 200
    assert http(upload["uploadUrl"], method="PUT", data=data)[0] == 409
    assert http(upload["uploadUrl"] + "x", method="PUT", data=data)[0] == 404

    with pytest.raises(
        GraphQLRequestError, match=r"resources.*expected `object`|invalid manifest|manifest"
    ):
        cp.call(lambda c: c.finalize_upload(app["id"], upload["objectKey"], {"resources": 1}))

    monkeypatch.setenv("FLASH_MAX_ARTIFACT_MB", "1")
    with pytest.raises(GraphQLRequestError, match=r"over the 1 MB limit \(FLASH_MAX_ARTIFACT_MB\)"):
        prepare(2 * 2**20)


# endpoints


def _released_environment(
    cp: ControlPlaneServer,
    tmp_path: Path,
    manifest: dict[str, Any],
    env_name: str = "production",
    app_name: str = "shop",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    apps = {a["name"]: a for a in cp.call(lambda c: c.list_apps())}
    app = apps.get(app_name) or cp.call(lambda c: c.create_app(app_name))
    env = cp.call(lambda c: c.create_environment(app["id"], env_name))
    build = cp.call(lambda c: upload_build(c, app["id"], manifest, tarball(), tmp_path))
    cp.call(lambda c: c.deploy_build(env["id"], build["id"]))
    return app, env, build


def test_save_update_and_delete_an_endpoint(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    app, env, build = _released_environment(cp, tmp_path, manifest_for("worker", lb=("api",)))

    saved = cp.call(
        lambda c: c.save_endpoint(
            endpoint_payload("api", env["id"], workersMin=1, scalerType="REQUEST_COUNT")
        )
    )
    assert len(saved["id"]) == 14 and saved["id"].isalnum() and saved["id"].islower()
    assert (
        saved["type"] == "LB" and saved["version"] == 1 and saved["flashEnvironmentId"] == env["id"]
    )
    (spec,) = cp.runtime.applied
    assert spec.id == saved["id"] and spec.type == "lb" and spec.resource_name == "api"
    assert (
        spec.app_id == app["id"]
        and spec.environment_id == env["id"]
        and spec.build_id == build["id"]
    )
    assert spec.artifact_path.is_file() and spec.python_version == "3.11"
    assert (spec.workers_min, spec.workers_max, spec.scaler_type, spec.max_concurrency) == (
        1,
        2,
        "REQUEST_COUNT",
        3,
    )
    assert spec.env["MODE"] == "x" and spec.env["FLASH_RESOURCE_NAME"] == "api"

    # Runpod's update: the settings with the endpoint's templateId.
    update = {**endpoint_payload("api", env["id"], workersMax=5), "id": saved["id"]}
    with pytest.raises(GraphQLRequestError, match="not both"):
        cp.call(lambda c: c.save_endpoint({**update, "templateId": saved["templateId"]}))
    inline = update.pop("template")
    updated = cp.call(lambda c: c.save_endpoint({**update, "templateId": saved["templateId"]}))
    assert updated["id"] == saved["id"] and updated["version"] == 2 and updated["workersMax"] == 5
    assert updated["templateId"] == saved["templateId"]
    assert cp.runtime.applied[-1].workers_max == 5
    assert cp.runtime.applied[-1].template_version == spec.template_version  # no roll

    # The Runpod SDK 2.0's update: the endpoint's own template again, inline and by its name,
    # with a new env: replaced in place (same id), and the workers roll onto it.
    changed = {**inline, "env": [*inline["env"], {"key": "RUNPOD_BUILD_ID", "value": "b2"}]}
    rolled = cp.call(lambda c: c.save_endpoint({**update, "template": changed}))
    assert rolled["templateId"] == saved["templateId"] and rolled["version"] == 3
    assert cp.runtime.applied[-1].env["RUNPOD_BUILD_ID"] == "b2"
    assert cp.runtime.applied[-1].template_version != spec.template_version
    # A name another template holds is still refused.
    other = {**inline, "name": "held-elsewhere"}
    cp.call(
        lambda c: c.save_template(
            {**other, "containerDiskInGb": 5, "dockerArgs": "", "volumeInGb": 0}
        )
    )
    with pytest.raises(
        GraphQLRequestError, match="a template named 'held-elsewhere' already exists"
    ):
        cp.call(lambda c: c.save_endpoint({**update, "template": other}))
    assert cp.call(lambda c: c.template(saved["templateId"]))["name"] == inline["name"]

    environment = cp.call(lambda c: c.environment(env["id"]))
    assert environment["state"] == "deployed"
    assert environment["endpoints"] == [
        {"id": saved["id"], "name": "api", "templateId": saved["templateId"]}
    ]

    # The platform keeps the build manifest's URLs true to what runs.
    urls = cp.call(lambda c: c.build(build["id"]))["manifest"]["resources_endpoints"]
    assert urls == {"api": cp.runtime.url_of(saved["id"])}

    cp.call(lambda c: c.delete_endpoint(saved["id"]))
    assert cp.runtime.removed == [saved["id"]]
    assert cp.call(lambda c: c.build(build["id"]))["manifest"]["resources_endpoints"] == {}
    assert cp.call(lambda c: c.environment(env["id"]))["endpoints"] == []
    with pytest.raises(GraphQLRequestError, match="endpoint not found"):
        cp.call(lambda c: c.delete_endpoint(saved["id"]))


def test_templates_are_unique_by_name_and_saving_one_rolls_its_endpoints(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    _, env, _ = _released_environment(cp, tmp_path, manifest_for("worker"))
    saved = cp.call(lambda c: c.save_endpoint(endpoint_payload("worker", env["id"])))
    template_id = saved["templateId"]
    name = f"t-worker-{env['id'][:8]}"
    live = cp.call(lambda c: c.template(template_id))
    assert live["name"] == name and live["imageName"] == "runpod/flash-cpu:py3.11-latest"
    first = cp.runtime.applied[-1]

    body = {
        "name": name,
        "imageName": "runpod/flash-cpu:py3.11-latest",
        "env": [*live["env"], {"key": "_FLASH_SOURCE_FINGERPRINT", "value": "v2"}],
        "containerDiskInGb": 10,
        "dockerArgs": "",
        "volumeInGb": 0,
    }
    with pytest.raises(GraphQLRequestError, match="already exists"):
        cp.call(lambda c: c.save_template(body))  # a new one with a taken name
    replaced = cp.call(lambda c: c.save_template({**body, "id": template_id}))
    assert replaced["id"] == template_id
    rolled = cp.runtime.applied[-1]
    assert rolled.id == saved["id"] and rolled.env["_FLASH_SOURCE_FINGERPRINT"] == "v2"
    assert rolled.template_version != first.template_version

    # The template outlives its endpoint (as on Runpod) until it is deleted by name.
    with pytest.raises(GraphQLRequestError, match="in use by endpoint"):
        cp.call(lambda c: c.delete_template(name))
    cp.call(lambda c: c.delete_endpoint(saved["id"]))
    assert cp.call(lambda c: c.template(template_id))["name"] == name
    cp.call(lambda c: c.delete_template(name))
    with pytest.raises(GraphQLRequestError, match="template not found"):
        cp.call(lambda c: c.template(template_id))
    again = cp.call(lambda c: c.save_endpoint(endpoint_payload("worker", env["id"])))
    assert again["templateId"] != template_id


def test_a_build_for_another_python_is_refused_at_deploy(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    manifest = {**manifest_for("worker"), "python_version": "3.9"}
    with pytest.raises(GraphQLRequestError, match=r"Python 3\.9.*runs workers on Python"):
        _released_environment(cp, tmp_path, manifest)
    assert cp.runtime.applied == []


def test_endpoint_input_errors_say_what_to_fix(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    app = cp.call(lambda c: c.create_app("shop"))
    empty = cp.call(lambda c: c.create_environment(app["id"], "empty"))
    with pytest.raises(GraphQLRequestError, match="has no build yet"):
        cp.call(lambda c: c.save_endpoint(endpoint_payload("worker", empty["id"])))
    _, env, _ = _released_environment(cp, tmp_path, manifest_for("worker"))

    cases: list[tuple[dict[str, Any], str]] = [
        ({"flashEnvironmentId": None}, "flashEnvironmentId is required"),
        ({"template": None}, "needs a template"),
        ({"type": "LB"}, "does not match resource 'worker', which is queue-based"),
        ({"workersMin": 3, "workersMax": 1}, "workersMin 3 and workersMax 1"),
        ({"scalerType": "FAST"}, "scalerType 'FAST'"),
        ({"networkVolumeId": "nosuchvol1"}, "network volume 'nosuchvol1' does not exist"),
    ]
    for change, message in cases:
        payload = {**endpoint_payload("worker", env["id"]), **change}
        with pytest.raises(GraphQLRequestError, match=message):
            cp.call(lambda c, p=payload: c.save_endpoint(p))
    with pytest.raises(
        GraphQLRequestError,
        match=r"serves resource 'ghost', which the environment's build does not have \(it has: worker\)",
    ):
        cp.call(lambda c: c.save_endpoint(endpoint_payload("ghost", env["id"])))
    assert cp.runtime.applied == []


def test_a_failed_apply_fails_the_environment(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    _, env, _ = _released_environment(cp, tmp_path, manifest_for("worker"))
    cp.runtime.failing.add("worker")
    with pytest.raises(
        GraphQLRequestError, match=r"could not run endpoint 'worker'.*worker image missing"
    ):
        cp.call(lambda c: c.save_endpoint(endpoint_payload("worker", env["id"])))
    environment = cp.call(lambda c: c.environment(env["id"]))
    assert environment["state"] == "failed" and environment["endpoints"] == []


def test_a_new_build_rolls_only_its_environment(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    two = manifest_for("worker", "old")
    app, dev, _ = _released_environment(cp, tmp_path, two, env_name="dev")
    _, prod, prod_build = _released_environment(cp, tmp_path, two, env_name="production")
    ids = {}
    for env in (dev, prod):
        for name in ("worker", "old"):
            ids[env["name"], name] = cp.call(
                lambda c, e=env, n=name: c.save_endpoint(endpoint_payload(n, e["id"]))
            )["id"]
    cp.runtime.applied.clear()

    new = cp.call(
        lambda c: upload_build(c, app["id"], manifest_for("worker"), tarball(b"v2"), tmp_path)
    )
    cp.call(lambda c: c.deploy_build(dev["id"], new["id"]))
    # dev's "worker" rolls onto the new build; "old" is not in it, so it keeps its build until the
    # deployer deletes it; production is not touched.
    assert [(s.id, s.build_id) for s in cp.runtime.applied] == [(ids["dev", "worker"], new["id"])]
    query = "query q($id: String!) { myself { endpoint(id: $id) { activeBuildid } } }"
    for key, build_id in [
        (("dev", "worker"), new["id"]),
        (("production", "worker"), prod_build["id"]),
    ]:
        got = cp.call(lambda c, k=key: c.execute(query, {"id": ids[k]}))
        assert got["myself"]["endpoint"]["activeBuildid"] == build_id


def test_deleting_an_app_stops_its_endpoints_and_frees_its_artifacts(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    app, env, _ = _released_environment(cp, tmp_path, manifest_for("worker"))
    other, other_env, _ = _released_environment(
        cp, tmp_path, manifest_for("worker"), app_name="other"
    )
    mine = cp.call(lambda c: c.save_endpoint(endpoint_payload("worker", env["id"])))
    theirs = cp.call(lambda c: c.save_endpoint(endpoint_payload("worker", other_env["id"])))
    cp.call(lambda c: c.delete_app(app["id"]))
    assert cp.runtime.removed == [mine["id"]] and theirs["id"] in cp.runtime.live
    # Both apps uploaded the same bytes: the file stays while the other app's build uses it.
    assert len(list(cp.config.artifacts_dir.glob("*.tar.gz"))) == 1
    cp.call(lambda c: c.delete_app(other["id"]))
    assert list(cp.config.artifacts_dir.glob("*.tar.gz")) == []


def test_resume_reapplies_stored_endpoints(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    _, env, build = _released_environment(cp, tmp_path, manifest_for("worker", lb=("api",)))
    ids = {}
    for name in ("worker", "api"):
        ids[name] = cp.call(lambda c, n=name: c.save_endpoint(endpoint_payload(n, env["id"])))["id"]
    # A restarted platform: the same endpoints, the load-balanced one on another port.
    fresh = RecordingRuntime(cp.config.url, first_port=42000)
    db = connect(cp.config.db_path)
    try:
        asyncio.run(controlplane.resume(db, fresh, cp.config))
    finally:
        db.close()
    assert sorted(s.resource_name for s in fresh.applied) == ["api", "worker"]
    assert {s.id for s in fresh.applied} == set(cp.runtime.live)
    urls = cp.call(lambda c: c.build(build["id"]))["manifest"]["resources_endpoints"]
    assert urls["api"] == "http://127.0.0.1:42000" and urls["worker"].endswith(
        "/v2/" + ids["worker"]
    )
