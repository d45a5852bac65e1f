"""The control plane's state in the platform database: apps, environments, builds, templates,
uploads and endpoints.

Each table has a typed record (frozen dataclasses below) whose attributes are the GraphQL field
names in snake case, so the resolvers hand records to graphql-core as they are (the control
plane's field resolver maps ``activeBuildId`` to ``active_build_id``). Statements are short and
run on the event loop's thread through the shared connection (see ``db.py``); each
multi-statement change runs in one transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    body TEXT NOT NULL,              -- the EndpointTemplateInput as given (without id)
    name TEXT                        -- unique among templates, as on Runpod
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
CREATE TABLE IF NOT EXISTS network_volumes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,           -- GB
    data_center_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

_ALPHANUMERIC = string.ascii_lowercase + string.digits


def runpod_id(length: int) -> str:
    """A Runpod-style id: lowercase letters and digits (endpoints have 14, templates 10)."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class Environment:
    id: str
    app_id: str
    name: str
    state: str
    active_build_id: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class Build:
    id: str
    app_id: str
    object_key: str
    artifact: str  # the file name in the artifacts directory
    sha256: str
    size: int
    manifest: dict[str, Any]
    created_at: str

    @property
    def serving(self) -> dict[str, Any]:
        """The manifest as ``flash_manifest.json`` data, whichever format the build's is (a
        Runpod SDK 2.0 app's ``runpod_manifest.json`` converted: ``appmanifest.py``)."""
        from ..appmanifest import serving_view

        return serving_view(self.manifest)

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.serving.get("resources") or {}
        return resources


@dataclass(frozen=True, slots=True)
class Upload:
    token: str
    app_id: str
    object_key: str
    declared_size: int
    expires_at: float  # unix time; the upload URL stops working after it
    artifact: str | None  # set once the tarball has arrived
    sha256: str | None
    size: int | None


@dataclass(frozen=True, slots=True)
class Template:
    """A pod template: the image and environment an endpoint's workers run with."""

    id: str
    name: str | None
    image_name: str | None
    env: dict[str, str]
    container_disk_in_gb: int | None
    docker_args: str | None
    volume_in_gb: int | None
    # the other EndpointTemplateInput/SaveTemplateInput fields, as given
    other: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_input(cls, template_id: str, body: Mapping[str, Any]) -> Template:
        given = {k: v for k, v in body.items() if v is not None and k != "id"}
        env = {str(kv["key"]): str(kv["value"]) for kv in given.pop("env", None) or []}
        return cls(
            id=template_id,
            name=given.pop("name", None),
            image_name=given.pop("imageName", None),
            env=env,
            container_disk_in_gb=given.pop("containerDiskInGb", None),
            docker_args=given.pop("dockerArgs", None),
            volume_in_gb=given.pop("volumeInGb", None),
            other=given,
        )

    def to_input(self) -> dict[str, Any]:
        """The template as Runpod's input shape (``env`` as key/value pairs)."""
        body: dict[str, Any] = {
            "name": self.name,
            "imageName": self.image_name,
            "env": [{"key": k, "value": v} for k, v in self.env.items()],
            "containerDiskInGb": self.container_disk_in_gb,
            "dockerArgs": self.docker_args,
            "volumeInGb": self.volume_in_gb,
            **self.other,
        }
        return {k: v for k, v in body.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    environment_id: str
    build_id: str  # the build its workers run
    name: str
    resource_name: str
    type: str  # QB or LB
    template_id: str
    settings: dict[str, Any]  # the other EndpointInput fields, as given
    version: int
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Volume:
    """A network volume (Runpod's REST ``/networkvolumes``): the account's, by id."""

    id: str
    name: str
    size: int
    data_center_id: str
    created_at: str

    def to_rest(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "dataCenterId": self.data_center_id,
        }


class ControlPlaneStore:
    """Typed access to the control plane's tables."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(flash_templates)")}
        if "name" not in columns:  # a database from before templates had unique names
            db.execute("ALTER TABLE flash_templates ADD COLUMN name TEXT")
            db.execute("UPDATE flash_templates SET name = json_extract(body, '$.name')")
        db.execute("CREATE INDEX IF NOT EXISTS flash_templates_by_name ON flash_templates (name)")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic change (:func:`.db.transaction`, taking the write lock at once)."""
        with db_transaction(self.db, immediate=True):
            yield

    # apps

    def create_app(self, name: str) -> App:
        app = App(id=str(uuid.uuid4()), name=name, created_at=_now())
        self.db.execute(
            "INSERT INTO flash_apps (id, name, created_at) VALUES (?, ?, ?)",
            (app.id, app.name, app.created_at),
        )
        return app

    def app(self, app_id: str) -> App | None:
        return self._app_by("id", app_id)

    def app_by_name(self, name: str) -> App | None:
        return self._app_by("name", name)

    def apps(self) -> list[App]:
        rows = self.db.execute("SELECT * FROM flash_apps ORDER BY name").fetchall()
        return [self._app(row) for row in rows]

    def _app_by(self, column: str, value: str) -> App | None:
        row = self.db.execute(f"SELECT * FROM flash_apps WHERE {column} = ?", (value,)).fetchone()
        return self._app(row) if row else None

    @staticmethod
    def _app(row: sqlite3.Row) -> App:
        return App(id=row["id"], name=row["name"], created_at=row["created_at"])

    def delete_app(self, app_id: str) -> None:
        """Deletes the app with its environments, builds and uploads (not its endpoints: the
        caller stops and deletes those first, and the foreign key makes sure it did)."""
        self.db.execute("DELETE FROM flash_apps WHERE id = ?", (app_id,))

    # environments

    def create_environment(self, app_id: str, name: str) -> Environment:
        env = Environment(
            id=str(uuid.uuid4()),
            app_id=app_id,
            name=name,
            state="pending",
            active_build_id=None,
            created_at=_now(),
        )
        self.db.execute(
            "INSERT INTO flash_environments (id, app_id, name, state, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (env.id, env.app_id, env.name, env.state, env.created_at),
        )
        return env

    def environment(self, env_id: str) -> Environment | None:
        row = self.db.execute("SELECT * FROM flash_environments WHERE id = ?", (env_id,)).fetchone()
        return self._environment(row) if row else None

    def environment_by_name(self, app_id: str, name: str) -> Environment | None:
        row = self.db.execute(
            "SELECT * FROM flash_environments WHERE app_id = ? AND name = ?", (app_id, name)
        ).fetchone()
        return self._environment(row) if row else None

    def environments(self, app_id: str) -> list[Environment]:
        rows = self.db.execute(
            "SELECT * FROM flash_environments WHERE app_id = ? ORDER BY name", (app_id,)
        ).fetchall()
        return [self._environment(row) for row in rows]

    @staticmethod
    def _environment(row: sqlite3.Row) -> Environment:
        return Environment(
            id=row["id"],
            app_id=row["app_id"],
            name=row["name"],
            state=row["state"],
            active_build_id=row["active_build_id"],
            created_at=row["created_at"],
        )

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

    # network volumes

    def create_volume(self, name: str, size: int, data_center_id: str) -> Volume:
        volume = Volume(runpod_id(10), name, size, data_center_id, _now())
        self.db.execute(
            "INSERT INTO network_volumes (id, name, size, data_center_id, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (volume.id, name, size, data_center_id, volume.created_at),
        )
        return volume

    def volumes(self) -> list[Volume]:
        rows = self.db.execute("SELECT * FROM network_volumes ORDER BY created_at, id")
        return [Volume(**dict(row)) for row in rows]

    def volume(self, volume_id: str) -> Volume | None:
        row = self.db.execute("SELECT * FROM network_volumes WHERE id = ?", (volume_id,)).fetchone()
        return Volume(**dict(row)) if row else None

    def delete_volume(self, volume_id: str) -> None:
        self.db.execute("DELETE FROM network_volumes WHERE id = ?", (volume_id,))

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

    def upload(self, token: str) -> Upload | None:
        return self._upload_by("token", token)

    def upload_by_key(self, object_key: str) -> Upload | None:
        return self._upload_by("object_key", object_key)

    def _upload_by(self, column: str, value: str) -> Upload | None:
        row = self.db.execute(
            f"SELECT * FROM flash_uploads WHERE {column} = ?", (value,)
        ).fetchone()
        return self._upload(row) if row else None

    @staticmethod
    def _upload(row: sqlite3.Row) -> Upload:
        return Upload(
            token=row["token"],
            app_id=row["app_id"],
            object_key=row["object_key"],
            declared_size=int(row["declared_size"]),
            expires_at=float(row["expires_at"]),
            artifact=row["artifact"],
            sha256=row["sha256"],
            size=row["size"],
        )

    def complete_upload(self, token: str, artifact: str, sha256: str, size: int) -> None:
        self.db.execute(
            "UPDATE flash_uploads SET artifact = ?, sha256 = ?, size = ? WHERE token = ?",
            (artifact, sha256, size, token),
        )

    def expired_uploads(self, now: float) -> list[Upload]:
        rows = self.db.execute("SELECT * FROM flash_uploads WHERE expires_at < ?", (now,))
        return [self._upload(row) for row in rows.fetchall()]

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

    def create_build(self, upload: Upload, manifest: dict[str, Any]) -> Build:
        """Turns a completed upload into a build (the upload is consumed)."""
        assert upload.artifact is not None and upload.sha256 is not None
        build = Build(
            id=str(uuid.uuid4()),
            app_id=upload.app_id,
            object_key=upload.object_key,
            artifact=upload.artifact,
            sha256=upload.sha256,
            size=upload.size or 0,
            manifest=manifest,
            created_at=_now(),
        )
        with self.transaction():
            self.db.execute(
                "INSERT INTO flash_builds (id, app_id, object_key, artifact, sha256, size, "
                "manifest, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    build.id,
                    build.app_id,
                    build.object_key,
                    build.artifact,
                    build.sha256,
                    build.size,
                    _json(manifest),
                    build.created_at,
                ),
            )
            self.db.execute("DELETE FROM flash_uploads WHERE token = ?", (upload.token,))
        return build

    def build(self, build_id: str) -> Build | None:
        row = self.db.execute("SELECT * FROM flash_builds WHERE id = ?", (build_id,)).fetchone()
        return self._build(row) if row else None

    def build_by_key(self, object_key: str) -> Build | None:
        row = self.db.execute(
            "SELECT * FROM flash_builds WHERE object_key = ?", (object_key,)
        ).fetchone()
        return self._build(row) if row else None

    def builds(self, app_id: str) -> list[Build]:
        rows = self.db.execute(
            "SELECT * FROM flash_builds WHERE app_id = ? ORDER BY created_at DESC, rowid DESC",
            (app_id,),
        ).fetchall()
        return [self._build(row) for row in rows]

    @staticmethod
    def _build(row: sqlite3.Row) -> Build:
        return Build(
            id=row["id"],
            app_id=row["app_id"],
            object_key=row["object_key"],
            artifact=row["artifact"],
            sha256=row["sha256"],
            size=row["size"],
            manifest=orjson.loads(row["manifest"]),
            created_at=row["created_at"],
        )

    def builds_in_use(self, app_id: str) -> set[str]:
        """Builds an environment has active or an endpoint runs."""
        rows = self.db.execute(
            "SELECT active_build_id FROM flash_environments WHERE app_id = ? "
            "AND active_build_id IS NOT NULL UNION SELECT e.build_id FROM flash_endpoints e "
            "JOIN flash_environments v ON v.id = e.environment_id WHERE v.app_id = ?",
            (app_id, app_id),
        ).fetchall()
        return {row[0] for row in rows}

    def delete_build(self, build_id: str) -> None:
        self.db.execute("DELETE FROM flash_builds WHERE id = ?", (build_id,))

    def set_build_manifest(self, build_id: str, manifest: dict[str, Any]) -> None:
        self.db.execute(
            "UPDATE flash_builds SET manifest = ? WHERE id = ?", (_json(manifest), build_id)
        )

    # templates

    def create_template(self, body: Mapping[str, Any]) -> Template:
        template = Template.from_input(runpod_id(10), body)
        self.db.execute(
            "INSERT INTO flash_templates (id, body, name) VALUES (?, ?, ?)",
            (template.id, _json(template.to_input()), template.name),
        )
        return template

    def update_template(self, template: Template) -> None:
        self.db.execute(
            "UPDATE flash_templates SET body = ?, name = ? WHERE id = ?",
            (_json(template.to_input()), template.name, template.id),
        )

    def template(self, template_id: str) -> Template | None:
        row = self.db.execute(
            "SELECT id, body FROM flash_templates WHERE id = ?", (template_id,)
        ).fetchone()
        return Template.from_input(row["id"], orjson.loads(row["body"])) if row else None

    def template_named(self, name: str) -> Template | None:
        row = self.db.execute(
            "SELECT id, body FROM flash_templates WHERE name = ? LIMIT 1", (name,)
        ).fetchone()
        return Template.from_input(row["id"], orjson.loads(row["body"])) if row else None

    def template_in_use(self, template_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM flash_endpoints WHERE template_id = ? LIMIT 1", (template_id,)
        ).fetchone()
        return row is not None

    def delete_template(self, template_id: str) -> None:
        self.db.execute("DELETE FROM flash_templates WHERE id = ?", (template_id,))

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
    ) -> Endpoint:
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
        endpoint = self.endpoint(endpoint_id)
        assert endpoint is not None
        return endpoint

    def set_endpoint_build(self, endpoint_id: str, build_id: str) -> None:
        self.db.execute(
            "UPDATE flash_endpoints SET build_id = ? WHERE id = ?", (build_id, endpoint_id)
        )

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = self.db.execute(
            "SELECT * FROM flash_endpoints WHERE id = ?", (endpoint_id,)
        ).fetchone()
        return self._endpoint(row) if row else None

    def endpoints(self, environment_id: str | None = None) -> list[Endpoint]:
        if environment_id is None:
            rows = self.db.execute("SELECT * FROM flash_endpoints ORDER BY created_at").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM flash_endpoints WHERE environment_id = ? ORDER BY name",
                (environment_id,),
            ).fetchall()
        return [self._endpoint(row) for row in rows]

    @staticmethod
    def _endpoint(row: sqlite3.Row) -> Endpoint:
        return Endpoint(
            id=row["id"],
            environment_id=row["environment_id"],
            build_id=row["build_id"],
            name=row["name"],
            resource_name=row["resource_name"],
            type=row["type"],
            template_id=row["template_id"],
            settings=orjson.loads(row["settings"]),
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.db.execute("DELETE FROM flash_endpoints WHERE id = ?", (endpoint_id,))
