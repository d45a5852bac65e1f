"""The worker's entry: extract the artifact, read the manifest, load the resource, serve it.

``python -m flash_runtime.bootstrap`` runs :func:`main`. A load-balanced worker starts listening
before anything else (so ``/ping`` answers 204 while the artifact is extracted and user code is
imported); a queue-based worker prepares first and then starts taking jobs.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..errors import FlashError
from ..manifest import CONVERTED_FROM, MANIFEST_NAME, Manifest
from .config import WorkerConfig
from .loader import LoadedResource, choose_resource, load_resource, read_manifest

log = logging.getLogger("flash_runtime.worker")


def setup_logging(config: WorkerConfig) -> None:
    """Tagged output streams and the log format (``logs.py``): text, or JSON lines."""
    from . import logs

    json_lines = logs.json_mode(config.env)
    if json_lines or config.env.get("FLASH_LOG_REQUEST_ID", "1").strip() != "0":
        from . import request_context

        fields = {"endpoint": config.endpoint_id or "", "worker": config.pod_id or ""}
        request_context.install({k: v for k, v in fields.items() if v} if json_lines else None)
    logs.setup(config.env, config.log_level)


def unpack(config: WorkerConfig) -> tuple[Manifest, str]:
    """Extract (unless disabled or already done) and pick this worker's resource."""
    if not config.disable_unpack:
        from .extract import ensure_extracted

        extracted = ensure_extracted(config.artifact_path, config.app_dir)
        log.info(
            "artifact %s %s into %s",
            config.artifact_path,
            "extracted" if extracted else "already extracted",
            config.app_dir,
        )
    if (config.app_dir / MANIFEST_NAME).is_file() or not _is_app_dir(config.app_dir):
        manifest = read_manifest(config.app_dir)
    else:  # a Runpod SDK 2.0 app's artifact (runpod_manifest.json): the second front end
        from .apps import read

        manifest = read(config.app_dir)[1]
    name = choose_resource(manifest, config)
    resource = manifest.resource(name)
    if config.endpoint_type and config.endpoint_type != resource.endpoint_type:
        raise FlashError(
            f"FLASH_ENDPOINT_TYPE={config.endpoint_type} but resource {name!r} is "
            f"{'load-balanced' if resource.is_load_balanced else 'queue-based'} in the manifest"
        )
    return manifest, name


def load(config: WorkerConfig, manifest: Manifest, name: str, started: float) -> LoadedResource:
    """Import the resource's user code (the slow part of a cold start)."""
    if manifest.extra.get(CONVERTED_FROM):  # a Runpod SDK 2.0 app's (appmanifest.py)
        from . import apps

        loaded = apps.load(config.app_dir, manifest, name, config.env)
    else:
        loaded = load_resource(config.app_dir, manifest, name)
    log.info(
        "resource %s ready (%s, %d function(s)) in %.3fs (imports %.3fs)",
        name,
        loaded.endpoint_type,
        len(loaded.functions),
        time.perf_counter() - started,
        loaded.import_seconds,
    )
    return loaded


def _is_app_dir(app_dir: Path) -> bool:
    # Imported only for an artifact without flash_manifest.json: artifacts for Runpod's 1.x
    # images, whose core leaves the second front end out (pack/core.py), never get here.
    from ..appmanifest import APP_MANIFEST_NAME

    return (app_dir / APP_MANIFEST_NAME).is_file()


def main() -> int:
    started = time.perf_counter()
    try:
        config = WorkerConfig.from_env()
    except FlashError as err:
        print(f"flash worker: {err}", file=sys.stderr)
        return 2
    setup_logging(config)
    try:
        if config.endpoint_type == "lb":
            # Known to be load-balanced: listen first, so /ping says 204 during extraction too.
            from .lb import serve as serve_lb

            return serve_lb(config, lambda: load(config, *unpack(config), started))
        manifest, name = unpack(config)
        if manifest.resource(name).is_load_balanced:
            from .lb import serve as serve_lb

            return serve_lb(config, lambda: load(config, manifest, name, started))
        from .queue import serve as serve_queue

        return serve_queue(config, load(config, manifest, name, started))
    except FlashError as err:
        log.error("worker cannot start: %s", err)
        return 1
