"""F8: the platform's disk use is bounded: old builds (and their artifacts) are collected, and
an extraction directory goes once no endpoint or worker uses it."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import APPS, build_app
from support import ControlPlaneServer, endpoint_spec

from flash_runtime.deploy.deployer import deploy
from flash_runtime.platform.controlplane import KEEP_BUILDS
from flash_runtime.testing.net import wait_until
from flash_runtime.testing.platform import InProcessPlatform


def test_old_builds_and_their_artifacts_are_collected(
    control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = control_plane
    shop = tmp_path / "shop"
    shutil.copytree(APPS / "deploy_shop", shop)
    worker = shop / "worker.py"
    for release in range(KEEP_BUILDS + 4):
        worker.write_text(worker.read_text().replace("RELEASE = ", f"RELEASE = 'r{release}' or "))
        result = deploy(shop, cp.target, environment_name="production", wait_s=None)
    builds = cp.call(lambda c: c.app_by_name("shop"))
    query = "query q($id: String!) { flashApp(flashAppId: $id) { flashBuilds { id } } }"
    listed = cp.call(lambda c: c.execute(query, {"id": builds["id"]}))["flashApp"]["flashBuilds"]
    assert len(listed) == KEEP_BUILDS and listed[0]["id"] == result.build_id
    artifacts = list(cp.config.artifacts_dir.glob("*.tar.gz"))
    assert len(artifacts) == KEEP_BUILDS


def test_an_extraction_directory_goes_with_its_last_user(tmp_path: Path) -> None:
    artifact = build_app("qb_sync", tmp_path / "apps")
    with InProcessPlatform(tmp_path / "home") as platform:
        assert platform.runtime is not None
        spec = endpoint_spec("diskendpoint01", "qb-sync", artifact, workers_min=1, workers_max=1)
        platform.apply(spec)
        ep = platform.runtime.endpoints[spec.id]
        app_dir = ep.app_dir
        wait_until(
            lambda: any(w.state.value == "ready" for w in ep.workers.values()), what="a worker"
        )
        assert app_dir.is_dir()
        platform.remove(spec.id)
        wait_until(lambda: not app_dir.exists(), timeout=30, what="the directory to go")
