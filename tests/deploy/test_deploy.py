"""The deployer and the management commands against the real control plane over HTTP, with the
recording runtime of ``test_controlplane`` at the runtime boundary. Every request the deployer
sends is also checked against Runpod's API (``tests/runpod_schema.graphql``)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import APPS
from rich.console import Console
from support import ControlPlaneServer, check_request, schemas

from flash_runtime import manifest as manifest_mod
from flash_runtime.cli import main
from flash_runtime.deploy.deployer import DeployedEndpoint, DeployError, DeployResult, deploy
from flash_runtime.deploy.summary import curl_line
from flash_runtime.deploy.target import resolve
from flash_runtime.errors import FlashError
from flash_runtime.protocol.controlplane import ControlPlaneClient
from flash_runtime.protocol.target import default_platform


@pytest.fixture(autouse=True)
def runpod_contract(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Checks each document and its variables against Runpod's schema before sending it."""
    sent: list[str] = []
    execute = ControlPlaneClient.execute

    async def checked(self: ControlPlaneClient, document: str, variables: Any = None) -> Any:
        check_request(schemas()["runpod"], document, variables or {})
        sent.append(document.split("(")[0].split("{")[0].strip())
        return await execute(self, document, variables)

    monkeypatch.setattr(ControlPlaneClient, "execute", checked)
    yield sent


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    project = tmp_path / "shop"
    shutil.copytree(APPS / "deploy_shop", project)
    return project


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def run_deploy(cp: ControlPlaneServer, project: Path, env: str = "production") -> DeployResult:
    return deploy(project, cp.target, environment_name=env, wait_s=None)


def versions(cp: ControlPlaneServer, env_id: str) -> dict[str, tuple[str, int, str]]:
    """resource -> (endpoint id, version, build id) as the control plane has them."""
    query = """query q($id: String!) { flashEnvironment(flashEnvironmentId: $id) {
        endpoints { id name version activeBuildid } } }"""
    data = cp.call(lambda c: c.execute(query, {"id": env_id}))
    return {
        ep["name"]: (ep["id"], ep["version"], ep["activeBuildid"])
        for ep in data["flashEnvironment"]["endpoints"]
    }


def templates(cp: ControlPlaneServer, env_id: str) -> dict[str, str]:
    """resource -> its endpoint's template id."""
    query = """query q($id: String!) { flashEnvironment(flashEnvironmentId: $id) {
        endpoints { name templateId } } }"""
    data = cp.call(lambda c: c.execute(query, {"id": env_id}))
    return {ep["name"]: ep["templateId"] for ep in data["flashEnvironment"]["endpoints"]}


def test_first_deploy_creates_everything(control_plane: ControlPlaneServer, shop: Path) -> None:
    cp = control_plane
    result = run_deploy(cp, shop)

    assert (result.app, result.environment) == ("shop", "production")
    by_name = {ep.resource: ep for ep in result.endpoints}
    assert sorted(by_name) == ["api", "jobs", "worker"]
    assert {ep.action for ep in result.endpoints} == {"created"}
    api, worker = by_name["api"], by_name["worker"]
    # A local load-balanced URL is the port the runtime gave it, as the control plane reports.
    assert api.type == "lb" and api.url == cp.runtime.url_of(api.id)
    assert api.routes == ["GET /release", "POST /echo"]
    assert worker.type == "qb" and worker.url == f"{cp.config.url}/v2/{worker.id}"

    specs = {spec.resource_name: spec for spec in cp.runtime.applied}
    assert sorted(specs) == ["api", "jobs", "worker"]
    assert specs["api"].type == "lb" and specs["api"].scaler_type == "REQUEST_COUNT"
    assert specs["api"].env["FLASH_APP"] == "shop"
    assert specs["api"].env["FLASH_ENV"] == "production"
    # No endpoint of the shop calls another: none gets the key or the environment's id.
    assert not any(
        {"FLASH_ENVIRONMENT_ID", "RUNPOD_API_KEY"} & set(spec.env) for spec in specs.values()
    )
    assert (
        specs["worker"].artifact_path.read_bytes() == (shop / ".flash/artifact.tar.gz").read_bytes()
    )

    # The URLs are recorded where discovery and the user find them.
    local = manifest_mod.load(shop / ".flash/flash_manifest.json")
    assert local.resources_endpoints == {ep.resource: ep.url for ep in result.endpoints}
    assert local.resources["api"].endpointId == api.id
    stored = cp.call(lambda c: c.build(result.build_id))["manifest"]
    assert stored["resources_endpoints"] == local.resources_endpoints

    app = cp.call(lambda c: c.app_by_name("shop"))
    assert [(e["name"], e["state"]) for e in app["flashEnvironments"]] == [
        ("production", "deployed")
    ]


def test_redeploy_creates_updates_deletes_and_leaves_the_rest(
    control_plane: ControlPlaneServer, shop: Path
) -> None:
    cp = control_plane
    first = run_deploy(cp, shop)
    before = versions(cp, first.environment_id)
    first_api = cp.runtime.live[before["api"][0]]
    first_templates = templates(cp, first.environment_id)
    del first_templates["jobs"]

    edit(shop / "worker.py", "workers=(0, 1)", "workers=(0, 2)")  # changed
    (shop / "jobs.py").unlink()  # removed
    (shop / "extra.py").write_text(  # new
        "from runpod_flash import Endpoint\n\n\n"
        '@Endpoint(name="extra", cpu="cpu3c-1-2")\n'
        "async def ping() -> dict:\n    return {}\n"
    )
    edit(shop / "api.py", 'return {"release": RELEASE}', 'return {"release": RELEASE, "n": 2}')
    second = run_deploy(cp, shop)

    # New code is a new source fingerprint in every template: each endpoint is updated, its
    # template saved in place (same id), which is what rolls workers on Runpod.
    actions = {ep.resource: ep.action for ep in second.endpoints}
    assert actions == {"api": "updated", "extra": "created", "worker": "updated"}
    assert second.removed == ["jobs"]
    after = versions(cp, second.environment_id)
    assert sorted(after) == ["api", "extra", "worker"]
    assert after["api"][0] == before["api"][0] and after["api"][2] == second.build_id
    assert after["worker"][0] == before["worker"][0] and after["worker"][1] == 2
    api = cp.runtime.live[after["api"][0]]
    assert api.env["_FLASH_SOURCE_FINGERPRINT"] != first_api.env["_FLASH_SOURCE_FINGERPRINT"]
    assert api.template_version != first_api.template_version
    now = templates(cp, second.environment_id)
    assert {name: now[name] for name in ("api", "worker")} == first_templates
    assert cp.runtime.removed == [before["jobs"][0]]
    assert cp.runtime.live[after["worker"][0]].workers_max == 2

    stored = cp.call(lambda c: c.build(second.build_id))["manifest"]
    assert sorted(stored["resources_endpoints"]) == ["api", "extra", "worker"]

    third = run_deploy(cp, shop)
    assert {ep.action for ep in third.endpoints} == {"unchanged"} and third.removed == []


def test_environments_are_isolated(control_plane: ControlPlaneServer, shop: Path) -> None:
    cp = control_plane
    dev = run_deploy(cp, shop, env="dev")
    production = run_deploy(cp, shop, env="production")
    assert {ep.id for ep in dev.endpoints}.isdisjoint(ep.id for ep in production.endpoints)
    production_before = versions(cp, production.environment_id)
    production_ids = {ep.id for ep in production.endpoints}
    applied_before = len(cp.runtime.applied)

    edit(shop / "worker.py", "workers=(0, 1)", "workers=(1, 2)")
    (shop / "jobs.py").unlink()
    redeployed = run_deploy(cp, shop, env="dev")

    assert redeployed.removed == ["jobs"]
    assert versions(cp, production.environment_id) == production_before
    touched = {spec.id for spec in cp.runtime.applied[applied_before:]} | set(cp.runtime.removed)
    assert touched and touched.isdisjoint(production_ids)
    app = cp.call(lambda c: c.app_by_name("shop"))
    active = {e["name"]: e["activeBuildId"] for e in app["flashEnvironments"]}
    assert active == {"dev": redeployed.build_id, "production": production.build_id}


def test_a_failing_endpoint_fails_the_deploy_and_the_next_one_retries(
    control_plane: ControlPlaneServer, shop: Path
) -> None:
    cp = control_plane
    cp.runtime.failing.add("worker")
    with pytest.raises(DeployError, match=r"worker: .*could not run endpoint 'worker'"):
        run_deploy(cp, shop)
    cp.runtime.failing.clear()
    result = run_deploy(cp, shop)
    assert {ep.resource: ep.action for ep in result.endpoints} == {
        "api": "unchanged",
        "jobs": "unchanged",
        "worker": "created",
    }


def test_an_app_name_the_control_plane_refuses(
    control_plane: ControlPlaneServer, shop: Path
) -> None:
    with pytest.raises(Exception, match="invalid app name 'my shop'"):
        deploy(shop, control_plane.target, app_name="my shop")


# the commands (flash app / env / undeploy) on the CLI


def flash(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--platform", "local"], input=input)
    return result.exit_code, result.output


def test_app_and_env_commands(control_plane: ControlPlaneServer, shop: Path) -> None:
    cp = control_plane
    deployed = run_deploy(cp, shop, env="dev")

    code, out = flash("app", "list", "--json")
    assert code == 0, out
    (app,) = json.loads(out)
    assert app["name"] == "shop" and [e["name"] for e in app["flashEnvironments"]] == ["dev"]
    code, out = flash("app", "get", "shop")
    assert code == 0 and "dev" in out and "deployed" in out

    assert flash("env", "create", "qa", "--app", "shop")[0] == 0
    code, out = flash("env", "list", "--app", "shop", "--json")
    assert [e["name"] for e in json.loads(out)] == ["dev", "qa"]
    code, out = flash("env", "get", "dev", "--app", "shop", "--json")
    details = json.loads(out)
    assert {ep["resource"]: ep["url"] for ep in details["endpoints"]} == {
        ep.resource: ep.url for ep in deployed.endpoints
    }

    code, out = flash("env", "delete", "dev", "--app", "shop", input="n\n")
    assert code == 1 and "cancelled" in out and cp.runtime.removed == []
    code, out = flash("env", "delete", "dev", "--app", "shop", "--yes")
    assert code == 0, out
    assert sorted(cp.runtime.removed) == sorted(ep.id for ep in deployed.endpoints)

    code, out = flash("app", "get", "nope")
    assert code == 1 and "app not found" in out
    code, out = flash("app", "delete", "shop", "--yes")
    assert code == 0 and flash("app", "list", "--json")[1].strip() == "[]"
    code, out = flash("app", "create", "fresh")
    assert code == 0 and "created app fresh" in out


def test_waiting_for_workers_on_runpod_checks_what_runpod_can_tell(
    control_plane: ControlPlaneServer, shop: Path
) -> None:
    """On Runpod an endpoint with workersMin 0 starts no worker before a request: not waited
    for; an endpoint whose health Runpod does not serve is noted, not failed."""
    edit(shop / "api.py", "workers=(0, 1)", "workers=(1, 1)")
    runpod_like = dataclasses.replace(control_plane.target, platform="runpod")
    console = Console(record=True, width=200)
    result = deploy(shop, runpod_like, environment_name="production", wait_s=5, console=console)
    assert {ep.action for ep in result.endpoints} == {"created"}
    text = console.export_text()
    assert "worker: not checked (workersMin 0" in text and "jobs: not checked (workersMin 0" in text
    assert "api: not checked" in text and "404" in text  # this control plane serves no /v2


def test_undeploy(control_plane: ControlPlaneServer, shop: Path) -> None:
    """runpod-flash's forms: `list`, one endpoint by NAME, `--all`; neither is a usage error."""
    cp = control_plane
    deployed = run_deploy(cp, shop)
    ids = {ep.resource: ep.id for ep in deployed.endpoints}
    code, out = flash("undeploy", "-a", "shop")
    assert code == 2 and "--all" in out and "undeploy list" in out
    code, out = flash("undeploy", "list", "-a", "shop", "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert {(row["environment"], row["resource"], row["id"]) for row in listed} == {
        ("production", name, endpoint_id) for name, endpoint_id in ids.items()
    }
    code, out = flash("undeploy", "list", "--app", "shop")
    assert code == 0 and all(endpoint_id in out for endpoint_id in ids.values())

    code, out = flash("undeploy", "nope", "-a", "shop", "-f")
    assert code == 1 and "no endpoint 'nope' in shop/production" in out
    assert "api" in out  # the endpoints it has are named
    # -i: chosen from a numbered list (a wrong answer is asked again), then confirmed
    code, out = flash("undeploy", "-i", "-a", "shop", input="9\nnone\n")
    assert code == 0 and "give numbers from 1 to 3" in out and "Nothing chosen" in out
    code, out = flash("undeploy", "api", "-a", "shop", "-e", "production", input="y\n")
    assert code == 0 and f"deleted endpoint api {ids['api']}" in out
    assert cp.runtime.removed == [ids["api"]]

    code, out = flash("undeploy", "--all", "--app", "shop", "--force", "--json")
    assert code == 0, out
    assert sorted(ep["id"] for ep in json.loads(out)["deleted"]) == sorted(
        endpoint_id for name, endpoint_id in ids.items() if name != "api"
    )
    assert sorted(cp.runtime.removed) == sorted(ids.values())
    code, out = flash("undeploy", "--all", "--app", "shop")
    assert code == 0 and "Nothing to undeploy" in out
    # The environment and its build stay: the next deploy brings the endpoints back.
    assert {ep.action for ep in run_deploy(cp, shop).endpoints} == {"created"}


def test_json_commands_fail_with_a_json_error_object(control_plane: ControlPlaneServer) -> None:
    for args in (("app", "get", "nope", "--json"), ("env", "list", "-a", "nope", "--json")):
        result = CliRunner().invoke(main, [*args, "--platform", "local"])
        assert result.exit_code == 1, result.output
        error = json.loads(result.stdout.splitlines()[0])["error"]
        assert error["type"] == "GraphQLRequestError"  # the control plane's own refusal
        assert "not found" in error["message"]


# targets and the printed summary


def test_platform_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    for name in ("RUNPOD_API_BASE_URL", "RUNPOD_ENDPOINT_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert default_platform() == "local"
    with pytest.raises(FlashError, match="flash login"):
        resolve("runpod")

    # The local key, exported to run the printed curl lines, keeps deploys local.
    monkeypatch.setenv("RUNPOD_API_KEY", resolve("local").api_key)
    assert default_platform() == "local"
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_account_key")
    assert default_platform() == "runpod"
    runpod_target = resolve(None)
    assert runpod_target.graphql_url == "https://api.runpod.io/graphql"
    assert runpod_target.endpoint_url("abc123", "qb") == "https://api.runpod.ai/v2/abc123"
    assert runpod_target.endpoint_url("abc123", "lb") == "https://abc123.api.runpod.ai"
    assert resolve("local").endpoint_url("abc123", "lb") is None  # the platform reports it


def test_the_key_comes_from_the_environment_the_projects_dotenv_or_flash_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runpod-flash's order: RUNPOD_API_KEY, the project's .env (found from a subdirectory
    too), then ~/.runpod/config.toml, which `flash login` writes keeping what else is there."""
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "home"))
    stored = tmp_path / "runpod" / "config.toml"
    monkeypatch.setenv("FLASH_CREDENTIALS_FILE", str(stored))
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    monkeypatch.chdir(project / "sub")
    assert default_platform() == "local"

    stored.parent.mkdir()
    stored.write_text('apikey = "rpa_from_runpodctl"\napiurl = "https://api.runpod.io"\n')
    assert resolve(None).api_key == "rpa_from_runpodctl"  # runpodctl's spelling, no [default]
    result = CliRunner().invoke(main, ["login"], input="rpa_stored\n")
    assert result.exit_code == 0 and str(stored) in result.output, result.output
    text = stored.read_text()
    assert 'apikey = "rpa_from_runpodctl"' in text and "[default]" in text  # kept, and added
    assert stored.stat().st_mode & 0o777 == 0o600
    assert default_platform() == "runpod" and resolve(None).api_key == "rpa_stored"

    (project / ".env").write_text("RUNPOD_API_KEY=rpa_dotenv\n")
    assert resolve(None).api_key == "rpa_dotenv"
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_environment")
    assert resolve(None).api_key == "rpa_environment"

    result = CliRunner().invoke(main, ["login", "--api-key", "two words"])
    assert result.exit_code == 1 and "one word" in result.output
    stored.write_text("[default\n")
    result = CliRunner().invoke(main, ["login", "--api-key", "rpa_x"])
    assert result.exit_code == 1 and "not valid TOML" in result.output


def test_curl_lines_are_ready_to_run() -> None:
    def endpoint(type: str, routes: list[str]) -> DeployedEndpoint:
        return DeployedEndpoint("x", "abc", type, "http://h:1", routes, "created")

    assert curl_line(endpoint("qb", [])) == (
        "curl -X POST http://h:1/runsync \\\n"
        '        -H "Content-Type: application/json" \\\n'
        '        -H "Authorization: Bearer $RUNPOD_API_KEY" \\\n'
        "        -d '{\"input\": {}}'"
    )
    # A GET without path parameters needs no arguments: the line works as printed.
    lb = endpoint("lb", ["GET /items/{id}", "GET /release", "POST /echo"])
    assert curl_line(lb).startswith("curl -X GET http://h:1/release \\")
    assert curl_line(endpoint("lb", ["POST /echo"])).startswith("curl -X POST http://h:1/echo")
