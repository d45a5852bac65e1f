"""Network volumes on the local platform: ``NetworkVolume(name=...)`` is created through Runpod's
REST API by ``flash deploy``, and its data (a host directory per app, environment and volume)
survives a redeploy with new code and a platform restart; ``flash env get`` lists it, and
``flash env delete`` deletes it with the environment after asking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from conftest import APPS
from support import FlashCLI, request


def notes(cli: FlashCLI, endpoint_id: str, **payload: Any) -> dict[str, Any]:
    key = str(cli.status()["api_key"])
    status, job = request("POST", f"{cli.url}/v2/{endpoint_id}/runsync", key, {"input": payload})
    assert status == 200 and job["status"] == "COMPLETED", job
    output: dict[str, Any] = job["output"]
    return output


def test_volume_data_outlives_builds_and_restarts(tmp_path: Path) -> None:
    project = tmp_path / "store"
    shutil.copytree(APPS / "volume_app", project)
    cli = FlashCLI(tmp_path / "flash_home", project)
    try:
        first = json.loads(cli("deploy", "--json"))
        endpoint = first["endpoints"][0]["id"]
        assert notes(cli, endpoint, write="kept") == {"note": "kept", "version": 1}

        source = project / "store.py"
        source.write_text(source.read_text().replace("VERSION = 1", "VERSION = 2"))
        second = json.loads(cli("deploy", "--json"))
        assert second["build"] != first["build"]
        assert notes(cli, endpoint) == {"note": "kept", "version": 2}

        cli("platform", "stop")
        cli("platform", "start")
        assert notes(cli, endpoint) == {"note": "kept", "version": 2}

        # One volume on the platform, found again by name on the second deploy.
        key = str(cli.status()["api_key"])
        status, volumes = request("GET", f"{cli.url}/v1/networkvolumes", key)
        assert status == 200 and [v["name"] for v in volumes] == ["notes-data"], volumes

        details = json.loads(cli("env", "get", "production", "--json"))
        [volume] = details["networkVolumes"]
        data = Path(volume["localPath"])
        assert volume["name"] == "notes-data" and (data / "note.txt").read_text() == "kept"
        assert "notes-data" in cli("env", "get", "production")

        # Deleting the environment asks first, naming the volume (no answer: nothing deleted).
        asked = cli.run("env", "delete", "production")
        assert asked.returncode != 0 and "notes-data" in asked.stdout, asked
        assert data.is_dir()
        cli("env", "delete", "production", "--yes")
        assert not data.exists()
    finally:
        cli.stop()
