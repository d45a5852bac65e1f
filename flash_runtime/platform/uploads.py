"""Artifact transfer: the presigned-style upload and download URLs of the control plane.

Runpod hands the deployer an S3 presigned URL to PUT the tarball to; the local platform imitates
it. The URL itself authorises the transfer (no ``Authorization`` header, as with S3):

* ``PUT /upload/{token}``: the token comes from ``prepareFlashArtifactUpload``, names the app and
  the declared size, expires after an hour and takes one tarball. The body is streamed to disk,
  hashed, checked against the declared size and the artifact size limit, and stored under its
  SHA-256, so identical builds share one file (and one extraction directory).
* ``GET /download/{objectKey}?expires=&signature=``: a build's tarball, for ``activeArtifact``'s
  ``downloadUrl``; the signature is an HMAC of the key and the expiry under the platform key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..protocol.local import PlatformConfig
from .controlplane_store import ControlPlaneStore

UPLOAD_TTL_SECONDS = 3600
DOWNLOAD_TTL_SECONDS = 3600
GZIP_MAGIC = b"\x1f\x8b"


def upload_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/upload/{token}"


def _signature(secret: str, object_key: str, expires: int) -> str:
    message = f"GET\n{object_key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def download_url(base_url: str, object_key: str, secret: str) -> tuple[str, int]:
    """A signed download URL for a build's tarball, and its expiry (unix time)."""
    expires = int(time.time()) + DOWNLOAD_TTL_SECONDS
    signature = _signature(secret, object_key, expires)
    url = (
        f"{base_url.rstrip('/')}/download/{quote(object_key)}"
        f"?expires={expires}&signature={signature}"
    )
    return url, expires


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def remove_artifact_if_unused(store: ControlPlaneStore, config: PlatformConfig, name: str) -> None:
    """Deletes an artifact file once no build or pending upload refers to it."""
    if name and not store.artifact_in_use(name):
        (config.artifacts_dir / name).unlink(missing_ok=True)


def purge_expired_uploads(store: ControlPlaneStore, config: PlatformConfig) -> None:
    """Forgets uploads whose URL expired without a finalize, and their files."""
    for row in store.expired_uploads(time.time()):
        store.delete_upload(row.token)
        if row.artifact:
            remove_artifact_if_unused(store, config, row.artifact)


def upload_routes(store: ControlPlaneStore, config: PlatformConfig) -> list[BaseRoute]:
    """The upload and download endpoints."""

    async def put_upload(request: Request) -> Response:
        upload = store.upload(request.path_params["token"])
        if upload is None:
            return _error(404, "unknown upload URL; request a new one (prepareFlashArtifactUpload)")
        if upload.expires_at < time.time():
            return _error(403, "this upload URL has expired; request a new one")
        if upload.artifact:
            return _error(409, "a tarball was already uploaded to this URL")
        declared = upload.declared_size
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != declared:
            return _error(
                400, f"Content-Length is {length} bytes but the upload was prepared for {declared}"
            )

        config.artifacts_dir.mkdir(parents=True, exist_ok=True)
        part = config.artifacts_dir / f".upload-{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        size = 0
        try:
            with part.open("wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > declared:
                        return _error(
                            413, f"the body exceeds the {declared} bytes declared when preparing"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
            if size != declared:
                return _error(400, f"received {size} bytes, expected {declared}")
            with part.open("rb") as f:
                if f.read(2) != GZIP_MAGIC:
                    return _error(400, "the body is not a gzip tarball (.tar.gz)")
            digest = hasher.hexdigest()
            name = f"{digest}.tar.gz"
            target = config.artifacts_dir / name
            if not target.exists():
                os.replace(part, target)
            store.complete_upload(upload.token, name, digest, size)
        finally:
            part.unlink(missing_ok=True)
        return Response(status_code=200, headers={"ETag": f'"{digest}"'})

    async def get_download(request: Request) -> Response:
        object_key = request.path_params["object_key"]
        try:
            expires = int(request.query_params.get("expires", ""))
        except ValueError:
            return _error(403, "missing or malformed expires parameter")
        signature = request.query_params.get("signature", "")
        expected = _signature(config.api_key, object_key, expires)
        if not hmac.compare_digest(signature, expected):
            return _error(403, "invalid signature")
        if expires < time.time():
            return _error(403, "this download URL has expired")
        build = store.build_by_key(object_key)
        if build is None:
            return _error(404, f"no build has object key {object_key!r}")
        path: Path = config.artifacts_dir / build.artifact
        return FileResponse(path, media_type="application/gzip")

    return [
        Route("/upload/{token}", put_upload, methods=["PUT"]),
        Route("/download/{object_key:path}", get_download, methods=["GET"]),
    ]
