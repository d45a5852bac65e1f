"""The runtime's own table: the endpoints it runs, their specs and their balancers' ports.

What the platform must find again after a restart to bring the same endpoints back on the same
URLs (the control plane's tables, and the job queue's, are their own modules'). A spec is kept
as JSON; :func:`generation_of` tells which workers run an outdated one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import time
from pathlib import Path

import orjson

from .model import EndpointSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime_endpoints (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec BLOB NOT NULL,     -- JSON of EndpointSpec
    lb_port INTEGER,        -- load-balanced endpoints keep their port (and URL) across restarts
    updated_at REAL NOT NULL
);
"""


def spec_to_json(spec: EndpointSpec) -> bytes:
    data = dataclasses.asdict(spec)
    data["artifact_path"] = str(spec.artifact_path)
    return orjson.dumps(data)


def spec_from_json(raw: bytes | str) -> EndpointSpec:
    data = orjson.loads(raw)
    known = {f.name for f in dataclasses.fields(EndpointSpec)}
    data = {k: v for k, v in data.items() if k in known}
    data["artifact_path"] = Path(data["artifact_path"])
    data["system_dependencies"] = tuple(data.get("system_dependencies") or ())
    return EndpointSpec(**data)


def save_endpoint(conn: sqlite3.Connection, spec: EndpointSpec, lb_port: int | None = None) -> None:
    """Record an endpoint for the runtime to run (the runtime's own table)."""
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT INTO runtime_endpoints (id, name, spec, lb_port, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
        " spec = excluded.spec, lb_port = coalesce(excluded.lb_port, lb_port),"
        " updated_at = excluded.updated_at",
        (spec.id, spec.name, spec_to_json(spec), lb_port, time.time()),
    )


def load_endpoints(conn: sqlite3.Connection) -> list[tuple[EndpointSpec, int | None]]:
    """The endpoints the runtime runs, with their load balancer ports."""
    conn.executescript(SCHEMA)
    return [
        (spec_from_json(row["spec"]), row["lb_port"])
        for row in conn.execute("SELECT spec, lb_port FROM runtime_endpoints ORDER BY id")
    ]


def generation_of(spec: EndpointSpec) -> str:
    """What a worker was started as: workers of another generation are replaced (a rolling
    update). The build is not part of it: as on Runpod, a new build alone does not restart
    running workers; a changed template does."""
    key = orjson.dumps(
        [
            spec.resource_name,
            spec.type,
            spec.python_version,
            spec.image,
            spec.template_version,
            sorted(spec.env.items()),
            spec.volume_dir,
            spec.gpu_count,
            spec.gpu_ids,
        ]
    )
    return hashlib.sha256(key).hexdigest()[:12]
