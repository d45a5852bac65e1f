"""runpod-flash's older API (``@remote`` with resource configurations, ``PodTemplate``): each
configuration becomes one Endpoint, so the packer and the workers see the same thing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import APPS

from flash_runtime import (
    ConfigurationError,
    CpuLiveServerless,
    Endpoint,
    LiveLoadBalancer,
    LiveServerless,
    PodTemplate,
    remote,
)
from flash_runtime.endpoint import endpoint_of
from flash_runtime.pack import build


@pytest.fixture(autouse=True)
def local_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_CALLS", "local")


def test_remote_makes_an_endpoint_with_the_configurations_settings() -> None:
    config = CpuLiveServerless(name="legacy-cpu", workersMin=1, workersMax=3, idleTimeout=5)
    with pytest.warns(DeprecationWarning, match="use runpod_flash.Endpoint"):

        @remote(resource_config=config, dependencies=["numpy"], system_dependencies=["jq"])
        def double(x: int) -> int:
            return 2 * x

    ep = endpoint_of(double)
    assert isinstance(ep, Endpoint) and ep.name == "legacy-cpu" and ep.kind == "qb"
    cfg = ep.deploy_config()
    assert cfg["instanceIds"] == ["cpu3g-2-8"]  # runpod-flash's CPU default
    assert (cfg["workersMin"], cfg["workersMax"], cfg["idleTimeout"]) == (1, 3, 5)
    assert cfg["dependencies"] == ["numpy"] and cfg["systemDependencies"] == ["jq"]
    assert asyncio.run(double(4)) == 8
    assert ep.target_defined_at is not None  # messages name the user's line, not ours
    assert ep.target_defined_at.file == __file__ and ep.defined_at.file == __file__

    api = LiveLoadBalancer(name="legacy-routes")
    with pytest.warns(DeprecationWarning):

        @remote(resource_config=api, method="GET", path="/x")
        def x() -> int:
            return 1

    assert endpoint_of(x).routes[0].defined_at.file == __file__  # type: ignore[union-attr]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_remote_refuses_what_it_cannot_honour() -> None:
    with pytest.raises(ConfigurationError, match="templateId, userId cannot be set here"):
        LiveServerless(name="x", userId="u", templateId="t")
    lb = LiveLoadBalancer(name="legacy-lb")
    with pytest.raises(ConfigurationError, match="is load-balanced: give @remote"):
        remote(lb)(lambda: None)
    with pytest.raises(ConfigurationError, match="method and path are for load-balanced"):
        remote(LiveServerless(name="legacy-qb"), method="GET", path="/x")(lambda: None)
    with pytest.raises(ConfigurationError, match="takes a resource configuration"):
        remote({"name": "x"})  # type: ignore[arg-type]

    def here() -> str:
        return "here"

    assert remote(LiveServerless(name="unused"), local=True)(here) is here  # not an endpoint


def test_pod_template_applies_what_it_can_and_refuses_the_rest() -> None:
    template = PodTemplate(imageName="me/worker:1", env={"A": "1"}, containerDiskInGb=40)
    ep = Endpoint("templated", env={"A": "0", "B": "2"}, template=template)
    cfg = ep.deploy_config()
    assert cfg["imageName"] == "me/worker:1" and cfg["containerDiskInGb"] == 40
    assert cfg["env"] == {"A": "1", "B": "2"}  # the template's env wins
    with pytest.raises(ConfigurationError, match=r"PodTemplate\(ports=..., startScript=...\)"):
        PodTemplate(ports="8000/http", startScript="run.sh")
    with pytest.raises(ConfigurationError, match="1-2048 GB"):
        PodTemplate(containerDiskInGb=0)
    with pytest.raises(ConfigurationError, match=r"image and template\.imageName differ"):
        Endpoint("both", image="a/b:1", template=PodTemplate(imageName="c/d:2"))


def test_a_legacy_project_builds_and_its_manifest_is_as_for_endpoints(tmp_path: Path) -> None:
    project = tmp_path / "legacy"
    project.mkdir()
    (project / "workers.py").write_text((APPS / "legacy_remote" / "workers.py").read_text())
    manifest = build(project, skip_deps=True).manifest
    gpu, api = manifest.resources["legacy-gpu"], manifest.resources["legacy-api"]
    assert gpu.resource_type == "LiveServerless" and gpu.scalerType == "REQUEST_COUNT"
    assert gpu.containerDiskInGb == 30 and gpu.env == {"MODE": "legacy"}
    assert gpu.dependencies == ["requests"] and gpu.workersMax == 2
    assert api.is_load_balanced and api.resource_type == "CpuLiveLoadBalancer"
    assert manifest.routes["legacy-api"] == {
        "POST /shout": "shout_route",
        "GET /ping-me": "ping_me",
    }
    assert api.makes_remote_calls and not gpu.makes_remote_calls

    # In a script (FLASH_CALLS=local) the route awaits the other endpoint's plain def.
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); import workers; "
        "print(json.dumps(asyncio.run(workers.shout_route('hi'))))"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code, str(project)],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "FLASH_CALLS": "local"},
    )
    assert json.loads(done.stdout) == {"shouted": "HI!"}
