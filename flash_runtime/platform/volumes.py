"""Network volumes: Runpod's REST ``/v1/networkvolumes`` and where their data lives here.

On Runpod a network volume belongs to the account (created by name, size and data centre, then
attached to endpoints by ``networkVolumeId``) and is mounted at ``/runpod-volume`` in every
worker of an endpoint it is attached to. Here the same API creates and lists the volumes, and
their data is a host directory per (app, environment, volume name) under
``FLASH_HOME/platform/volumes``: a ``live`` environment never writes into ``production``'s
data. It survives redeploys and platform restarts, is listed with its environment, and is
deleted with it (``flash env delete`` asks first). Docker workers get it mounted at
``/runpod-volume``; process workers find it at ``$RUNPOD_VOLUME_PATH`` (set in both).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..protocol.local import PlatformConfig
from ..resources import DataCenter
from .controlplane_store import ControlPlaneStore
from .serverless import ApiError, JSONResponse, bearer_ok, read_body

UNAUTHORIZED = "missing or wrong API key: send `Authorization: Bearer <key>`"
MAX_BODY = 64 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _segment(name: str) -> str:
    """A name as one safe path segment (never ``..``, never empty)."""
    safe = _UNSAFE.sub("_", name).strip("._") or "_"
    return safe[:100]


def host_dir(config: PlatformConfig, app: str, environment: str, volume: str) -> Path:
    """The directory holding (app, environment)'s data of the volume named ``volume``."""
    return config.root / "volumes" / _segment(app) / _segment(environment) / _segment(volume)


def environment_dir(config: PlatformConfig, app: str, environment: str) -> Path:
    return config.root / "volumes" / _segment(app) / _segment(environment)


def delete_environment_data(config: PlatformConfig, app: str, environment: str) -> None:
    shutil.rmtree(environment_dir(config, app, environment), ignore_errors=True)


def attached_volume(settings: dict[str, Any]) -> str | None:
    """The volume an endpoint's workers mount: ``networkVolumeId``, else the first of
    ``networkVolumeIds`` (Runpod mounts the one in the worker's data centre: here, the first)."""
    single = settings.get("networkVolumeId")
    if single:
        return str(single)
    for item in settings.get("networkVolumeIds") or []:
        if isinstance(item, dict) and item.get("networkVolumeId"):
            return str(item["networkVolumeId"])
    return None


def _validated(body: Any) -> tuple[str, int, str]:
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object {name, size, dataCenterId}")
    unknown = sorted(set(body) - {"name", "size", "dataCenterId"})
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "name: a network volume needs a non-empty name")
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 10 <= size <= 4096:
        raise ApiError(400, f"size: a whole number of GB from 10 to 4096, not {size!r}")
    data_center = body.get("dataCenterId")
    known = {d.value for d in DataCenter}
    if data_center not in known:
        raise ApiError(
            400, f"dataCenterId: {data_center!r} is not one of {', '.join(sorted(known))}"
        )
    return name.strip(), size, str(data_center)


def routes(db: sqlite3.Connection, config: PlatformConfig) -> list[BaseRoute]:
    """``GET|POST /v1/networkvolumes``, ``GET|DELETE /v1/networkvolumes/{id}``."""
    store = ControlPlaneStore(db)

    def authorized(request: Request) -> None:
        if not bearer_ok(request, config.api_key):
            raise ApiError(401, UNAUTHORIZED)

    async def collection(request: Request) -> Response:
        authorized(request)
        if request.method == "GET":
            return JSONResponse([v.to_rest() for v in store.volumes()])
        raw = await read_body(request, MAX_BODY)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "the request body is not JSON") from None
        name, size, data_center = _validated(body)
        with store.transaction():
            volume = store.create_volume(name, size, data_center)
        return JSONResponse(volume.to_rest())

    async def one(request: Request) -> Response:
        authorized(request)
        volume_id = request.path_params["volume_id"]
        volume = store.volume(volume_id)
        if volume is None:
            raise ApiError(404, f"network volume {volume_id} not found")
        if request.method == "GET":
            return JSONResponse(volume.to_rest())
        users = [ep.name for ep in store.endpoints() if attached_volume(ep.settings) == volume.id]
        if users:
            raise ApiError(
                400,
                f"network volume {volume_id} is attached to endpoint(s) "
                f"{', '.join(sorted(users))}: delete or detach them first",
            )
        with store.transaction():
            store.delete_volume(volume.id)
        return JSONResponse({})

    return [
        Route("/v1/networkvolumes", collection, methods=["GET", "POST"]),
        Route("/v1/networkvolumes/{volume_id}", one, methods=["GET", "DELETE"]),
    ]
