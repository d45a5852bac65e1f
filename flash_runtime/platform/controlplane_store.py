"""The control plane's state in the platform database: apps, environments, builds, templates,
uploads and endpoints.

Rows come back as dicts keyed by the GraphQL field names (``activeBuildId``, ``createdAt``...), so
the resolvers can hand them to graphql-core as they are. Statements are short and run on the event
loop's thread through the shared connection (see ``db.py``); each multi-statement change runs in
one transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

from .db import transaction as db_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS flash_apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flash_environments (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES flash_apps(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    active_build_id TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (app_id, name)
);
CREATE TABLE IF NOT EXISTS flash_builds (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES flash_apps(id) ON DELETE CASCADE,
    object_key TEXT NOT NULL UNIQUE,
    artifact TEXT NOT NULL,          -- file name in the artifacts directory
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flash_uploads (
    token TEXT PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES flash_apps(id) ON DELETE CASCADE,
    object_key TEXT NOT NULL UNIQUE,
    declared_size INTEGER NOT NULL,
    expires_at REAL NOT NULL,        -- unix time; the upload URL stops working after it
    artifact TEXT,                   -- set once the tarball has arrived
    sha256 TEXT,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS flash_templates (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL               -- the EndpointTemplateInput as given
);
CREATE TABLE IF NOT EXISTS flash_endpoints (
    id TEXT PRIMARY KEY,
    environment_id TEXT NOT NULL REFERENCES flash_environments(id),
    build_id TEXT NOT NULL,          -- the build its workers run
    name TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    type TEXT NOT NULL,              -- QB or LB
    template_id TEXT NOT NULL,
    settings TEXT NOT NULL,          -- the other EndpointInput fields, as given
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flash_endpoints_by_environment ON flash_endpoints (environment_id);
"""

_ALPHANUMERIC = string.ascii_lowercase + string.digits


def runpod_id(length: int) -> str:
    """A Runpod-style id: lowercase letters and digits (endpoints have 14, templates 10)."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class ControlPlaneStore:
    """Typed access to the control plane's tables."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic change (:func:`.db.transaction`, taking the write lock at once)."""
        with db_transaction(self.db, immediate=True):
            yield

    # apps

    def create_app(self, name: str) -> dict[str, Any]:
        app_id = str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO flash_apps (id, name, created_at) VALUES (?, ?, ?)",
            (app_id, name, _now()),
        )
        return self._app_by("id", app_id) or {}

    def app(self, app_id: str) -> dict[str, Any] | None:
        return self._app_by("id", app_id)

    def app_by_name(self, name: str) -> dict[str, Any] | None:
        return self._app_by("name", name)

    def apps(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM flash_apps ORDER BY name").fetchall()
        return [self._app(row) for row in rows]

    def _app_by(self, column: str, value: str) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT * FROM flash_apps WHERE {column} = ?", (value,)).fetchone()
        return self._app(row) if row else None

    @staticmethod
    def _app(row: sqlite3.Row) -> dict[str, Any]:
        return {"id": row["id"], "name": row["name"], "createdAt": row["created_at"]}

    def delete_app(self, app_id: str) -> None:
        """Deletes the app with its environments, builds and uploads (not its endpoints: the
        caller stops and deletes those first, and the foreign key makes sure it did)."""
        self.db.execute("DELETE FROM flash_apps WHERE id = ?", (app_id,))

    # environments

    def create_environment(self, app_id: str, name: str) -> dict[str, Any]:
        env_id = str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO flash_environments (id, app_id, name, state, created_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            (env_id, app_id, name, _now()),
        )
        return self.environment(env_id) or {}

    def environment(self, env_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM flash_environments WHERE id = ?", (env_id,)).fetchone()
        return self._environment(row) if row else None

    def environment_by_name(self, app_id: str, name: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM flash_environments WHERE app_id = ? AND name = ?", (app_id, name)
        ).fetchone()
        return self._environment(row) if row else None

    def environments(self, app_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM flash_environments WHERE app_id = ? ORDER BY name", (app_id,)
        ).fetchall()
        return [self._environment(row) for row in rows]

    @staticmethod
    def _environment(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "appId": row["app_id"],
            "state": row["state"],
            "activeBuildId": row["active_build_id"],
            "createdAt": row["created_at"],
        }

    def set_environment_state(
        self, env_id: str, state: str, active_build_id: str | None = None
    ) -> None:
        if active_build_id is None:
            self.db.execute("UPDATE flash_environments SET state = ? WHERE id = ?", (state, env_id))
        else:
            self.db.execute(
                "UPDATE flash_environments SET state = ?, active_build_id = ? WHERE id = ?",
                (state, active_build_id, env_id),
            )

    def delete_environment(self, env_id: str) -> None:
        self.db.execute("DELETE FROM flash_environments WHERE id = ?", (env_id,))

    # uploads and builds

    def create_upload(
        self, app_id: str, object_key: str, declared_size: int, expires_at: float
    ) -> str:
        token = secrets.token_urlsafe(32)
        self.db.execute(
            "INSERT INTO flash_uploads (token, app_id, object_key, declared_size, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (token, app_id, object_key, declared_size, expires_at),
        )
        return token

    def upload(self, token: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM flash_uploads WHERE token = ?", (token,)
        ).fetchone()
        return row

    def upload_by_key(self, object_key: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM flash_uploads WHERE object_key = ?", (object_key,)
        ).fetchone()
        return row

    def complete_upload(self, token: str, artifact: str, sha256: str, size: int) -> None:
        self.db.execute(
            "UPDATE flash_uploads SET artifact = ?, sha256 = ?, size = ? WHERE token = ?",
            (artifact, sha256, size, token),
        )

    def expired_uploads(self, now: float) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM flash_uploads WHERE expires_at < ?", (now,)
        ).fetchall()

    def delete_upload(self, token: str) -> None:
        self.db.execute("DELETE FROM flash_uploads WHERE token = ?", (token,))

    def artifact_in_use(self, artifact: str) -> bool:
        """Whether a build or a pending upload still refers to this artifact file."""
        row = self.db.execute(
            "SELECT 1 FROM flash_builds WHERE artifact = ? "
            "UNION SELECT 1 FROM flash_uploads WHERE artifact = ? LIMIT 1",
            (artifact, artifact),
        ).fetchone()
        return row is not None

    def create_build(self, upload: sqlite3.Row, manifest: dict[str, Any]) -> dict[str, Any]:
        """Turns a completed upload into a build (the upload is consumed)."""
        build_id = str(uuid.uuid4())
        with self.transaction():
            self.db.execute(
                "INSERT INTO flash_builds (id, app_id, object_key, artifact, sha256, size, "
                "manifest, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    build_id,
                    upload["app_id"],
                    upload["object_key"],
                    upload["artifact"],
                    upload["sha256"],
                    upload["size"],
                    _json(manifest),
                    _now(),
                ),
            )
            self.db.execute("DELETE FROM flash_uploads WHERE token = ?", (upload["token"],))
        return self.build(build_id) or {}

    def build(self, build_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM flash_builds WHERE id = ?", (build_id,)).fetchone()
        return self._build(row) if row else None

    def build_by_key(self, object_key: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM flash_builds WHERE object_key = ?", (object_key,)
        ).fetchone()
        return self._build(row) if row else None

    def builds(self, app_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM flash_builds WHERE app_id = ? ORDER BY created_at DESC, rowid DESC",
            (app_id,),
        ).fetchall()
        return [self._build(row) for row in rows]

    @staticmethod
    def _build(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "appId": row["app_id"],
            "objectKey": row["object_key"],
            "artifact": row["artifact"],
            "sha256": row["sha256"],
            "size": row["size"],
            "manifest": orjson.loads(row["manifest"]),
            "createdAt": row["created_at"],
        }

    def set_build_manifest(self, build_id: str, manifest: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE flash_builds SET manifest = ? WHERE id = ?", (_json(manifest), build_id)
        )

    # templates

    def create_template(self, body: dict[str, Any]) -> str:
        template_id = runpod_id(10)
        self.db.execute(
            "INSERT INTO flash_templates (id, body) VALUES (?, ?)", (template_id, _json(body))
        )
        return template_id

    def template(self, template_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT body FROM flash_templates WHERE id = ?", (template_id,)
        ).fetchone()
        if row is None:
            return None
        body: dict[str, Any] = orjson.loads(row["body"])
        return {**body, "id": template_id}

    # endpoints

    def save_endpoint(
        self,
        endpoint_id: str | None,
        *,
        environment_id: str,
        build_id: str,
        name: str,
        resource_name: str,
        type: str,
        template_id: str,
        settings: dict[str, Any],
    ) -> dict[str, Any]:
        """Inserts (``endpoint_id`` None: a new id is drawn) or replaces an endpoint."""
        now = _now()
        if endpoint_id is None:
            endpoint_id = runpod_id(14)
            self.db.execute(
                "INSERT INTO flash_endpoints (id, environment_id, build_id, name, resource_name, "
                "type, template_id, settings, version, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (
                    endpoint_id,
                    environment_id,
                    build_id,
                    name,
                    resource_name,
                    type,
                    template_id,
                    _json(settings),
                    now,
                    now,
                ),
            )
        else:
            self.db.execute(
                "UPDATE flash_endpoints SET build_id = ?, name = ?, resource_name = ?, type = ?, "
                "template_id = ?, settings = ?, version = version + 1, updated_at = ? "
                "WHERE id = ?",
                (
                    build_id,
                    name,
                    resource_name,
                    type,
                    template_id,
                    _json(settings),
                    now,
                    endpoint_id,
                ),
            )
        return self.endpoint(endpoint_id) or {}

    def set_endpoint_build(self, endpoint_id: str, build_id: str) -> None:
        self.db.execute(
            "UPDATE flash_endpoints SET build_id = ? WHERE id = ?", (build_id, endpoint_id)
        )

    def endpoint(self, endpoint_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM flash_endpoints WHERE id = ?", (endpoint_id,)
        ).fetchone()
        return self._endpoint(row) if row else None

    def endpoints(self, environment_id: str | None = None) -> list[dict[str, Any]]:
        if environment_id is None:
            rows = self.db.execute("SELECT * FROM flash_endpoints ORDER BY created_at").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM flash_endpoints WHERE environment_id = ? ORDER BY name",
                (environment_id,),
            ).fetchall()
        return [self._endpoint(row) for row in rows]

    @staticmethod
    def _endpoint(row: sqlite3.Row) -> dict[str, Any]:
        settings: dict[str, Any] = orjson.loads(row["settings"])
        return {
            **settings,
            "id": row["id"],
            "name": row["name"],
            "type": row["type"],
            "templateId": row["template_id"],
            "flashEnvironmentId": row["environment_id"],
            "activeBuildid": row["build_id"],
            "resourceName": row["resource_name"],
            "version": row["version"],
            "userId": "local",
        }

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.db.execute("DELETE FROM flash_endpoints WHERE id = ?", (endpoint_id,))
