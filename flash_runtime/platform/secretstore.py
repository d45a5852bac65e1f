"""Platform secrets: named values a template's env refers to as ``{{ RUNPOD_SECRET_<name> }}``.

As on Runpod, a value is written once (``secretCreate``) and never read back through the API
(``myself { secrets { id name description createdAt } }`` has no value field); a worker gets
the value in its environment, substituted for each reference when it starts, and nowhere else
(the template, the endpoint and every API answer keep the reference). A reference to a secret
that does not exist stays as written, which is what a Runpod worker sees too. The values live
in the platform's database, which only the platform's user can read (``FLASH_HOME`` is 0700,
the file 0600).

The Runpod SDK 2.0 writes these with ``rp secret add|list|delete`` and ``runpod.Secret("name")``
in an ``env=`` mapping; ``flash platform secret`` is the platform's own equivalent.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .controlplane_store import runpod_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    value TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
"""
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
REFERENCE = re.compile(r"\{\{\s*RUNPOD_SECRET_([A-Za-z0-9_.-]+)\s*\}\}")
MAX_VALUE_BYTES = 64 * 1024


class SecretError(ValueError):
    """A secret the platform refuses to store or delete; the message says why."""


@dataclass(frozen=True)
class Secret:
    id: str
    name: str
    description: str
    created_at: str


class SecretStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    @classmethod
    def in_memory(cls) -> SecretStore:
        """A store of its own (for tests and tools without a platform database)."""
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        return cls(db)

    def list(self) -> list[Secret]:
        rows = self.db.execute(
            "SELECT id, name, description, created_at FROM secrets ORDER BY name"
        ).fetchall()
        return [Secret(r["id"], r["name"], r["description"], r["created_at"]) for r in rows]

    def create(self, name: str, value: str, description: str = "") -> Secret:
        if not NAME.match(name or ""):
            raise SecretError(
                f"invalid secret name {name!r}: 1 to 100 letters, digits, '_', '.' or '-'"
            )
        if not value:
            raise SecretError("a secret needs a value")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise SecretError(f"a secret's value is at most {MAX_VALUE_BYTES // 1024} KB")
        created = datetime.fromtimestamp(time.time(), UTC).isoformat().replace("+00:00", "Z")
        secret = Secret(runpod_id(12), name, description or "", created)
        try:
            self.db.execute(
                "INSERT INTO secrets (id, name, value, description, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (secret.id, name, value, secret.description, created),
            )
        except sqlite3.IntegrityError:
            raise SecretError(
                f"a secret named {name!r} already exists: delete it first to change its value"
            ) from None
        return secret

    def delete(self, ref: str) -> bool:
        """Delete by id (what the API takes) or by name."""
        gone = self.db.execute("DELETE FROM secrets WHERE id = ? OR name = ?", (ref, ref))
        if gone.rowcount == 0:
            raise SecretError(f"secret not found: no secret has id or name {ref!r}")
        return True

    def values(self, names: set[str]) -> dict[str, str]:
        if not names:
            return {}
        marks = ",".join("?" * len(names))
        rows = self.db.execute(
            f"SELECT name, value FROM secrets WHERE name IN ({marks})", sorted(names)
        ).fetchall()
        return {r["name"]: r["value"] for r in rows}

    def render(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with each ``{{ RUNPOD_SECRET_<name> }}`` replaced by the secret's value."""
        wanted = {m for v in env.values() for m in REFERENCE.findall(v)}
        if not wanted:
            return env
        values = self.values(wanted)

        def substitute(match: re.Match[str]) -> str:
            return values.get(match[1], match[0])

        return {k: REFERENCE.sub(substitute, v) for k, v in env.items()}
