"""The wire vocabulary every side shares: job statuses, payload shapes, auth, worker protocol.

One small module, as Cog keeps its own: the platform answers with these statuses and checks
keys this way, the worker writes the payloads the remote client reads back, and the platform
hands workers the job protocol URLs that the worker's job loop fills in. Standard library only,
so any side (a worker included) imports it for free.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from ..errors import describe

# -- jobs ---------------------------------------------------------------------------------------


class JobStatus(StrEnum):
    """A queue job's status, as Runpod's serverless API reports it."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)

# -- payloads -----------------------------------------------------------------------------------

_CLASS_REPR = re.compile(r"^<class '(?:builtins\.)?(.+)'>$")


def job_error(err: BaseException, traceback_text: str, **about: str) -> str:
    """A failed job's ``error``: JSON text in the ``runpod`` SDK's shape (``error_type`` as
    ``"<class 'ValueError'>"``, ``error_message``, ``error_traceback``, then ``about``: hostname,
    worker id, SDK version), which the official client and :func:`read_job_error` read."""
    info = {
        "error_type": str(type(err)),
        "error_message": describe(err),
        "error_traceback": traceback_text,
        **about,
    }
    return json.dumps(info)


def read_job_error(error: Any) -> tuple[str, str]:
    """(exception type name, message) of a failed job's ``error`` (text or object)."""
    info = error
    if isinstance(error, str):
        try:
            info = json.loads(error)
        except ValueError:
            info = error
    if isinstance(info, dict) and ("error_type" in info or "error_message" in info):
        raw_type = str(info.get("error_type") or "Exception")
        match = _CLASS_REPR.match(raw_type)
        return (match.group(1) if match else raw_type), str(info.get("error_message") or "")
    return "Exception", str(info)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_of(value: str | None) -> str | None:
    """A caller's ``X-Request-ID`` when it is one we carry on (up to 128 letters, digits and
    ``._:@/+=-``); None otherwise (the id is then made afresh)."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return None


def route_error(error: str, message: str, request_id: str, **extra: Any) -> dict[str, Any]:
    """A load-balanced route's error body: ``{"error": type, "message": ..., "request_id"}``."""
    return {"error": error, "message": message, **extra, "request_id": request_id}


def read_route_error(body: Any) -> tuple[str, str] | None:
    """(error type, message) of a route's error body, or None when it is not one."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"], str(body.get("message") or "")
    return None


# -- auth ---------------------------------------------------------------------------------------

UNAUTHORIZED = (
    "unauthorized: send 'Authorization: Bearer <API key>' (`flash platform status` shows the key)"
)


def bearer(key: str) -> dict[str, str]:
    """The ``Authorization`` header that carries ``key``."""
    return {"Authorization": f"Bearer {key}"}


def bearer_token(header: str | None) -> str:
    """The key an ``Authorization`` value carries (``Bearer <key>``, or the raw key as Runpod
    also accepts)."""
    value = header or ""
    return (value[7:] if value[:7].lower() == "bearer " else value).strip()


def key_matches(header: str | None, key: str) -> bool:
    """Whether an ``Authorization`` value carries ``key``; compared in constant time."""
    return secrets.compare_digest(bearer_token(header).encode(), key.encode())


# Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus those a proxy
# sets itself: never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# -- the worker job protocol (runpod 1.12's) ----------------------------------------------------

JOB_TAKE = "job-take"
JOB_TAKE_BATCH = "job-take-batch"
JOB_DONE = "job-done"
JOB_STREAM = "job-stream"
JOB_STOP = "job-stop"
PING = "ping"


def worker_webhooks(endpoint_base: str, query: str) -> dict[str, str]:
    """The ``RUNPOD_WEBHOOK_*`` variables a worker of the endpoint at ``endpoint_base``
    (``.../v2/<endpoint id>``) gets, with the placeholders the worker fills in (``$ID``: the
    worker id for job-take, the job id for the others; ``$RUNPOD_POD_ID``)."""
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{endpoint_base}/{JOB_TAKE}/$ID?{query}",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{endpoint_base}/{JOB_DONE}/$RUNPOD_POD_ID/$ID?{query}",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{endpoint_base}/{JOB_STREAM}/$RUNPOD_POD_ID/$ID?{query}",
        "RUNPOD_WEBHOOK_PING": f"{endpoint_base}/{PING}/$RUNPOD_POD_ID?{query}",
    }


# The Runpod SDK 2.0's sentinel: calls to the pseudo endpoint ``flash`` (``/v2/flash/...``, and
# ``https://flash.{host}`` for HTTP routes) name their endpoint by these headers instead.
SENTINEL_ID = "flash"
SENTINEL_HEADERS = ("x-flash-app", "x-flash-environment", "x-flash-endpoint")


def sentinel_names(headers: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(app, environment, endpoint) from a sentinel call's headers (lower-case names), or None
    when one is missing or empty."""
    app, env, endpoint = (headers.get(name, "") for name in SENTINEL_HEADERS)
    return (app, env, endpoint) if app and env and endpoint else None
