"""The platform's SQLite database: one file, WAL mode, each module creating its own tables.

Statements are short and local, so they run on the event loop's thread through one connection;
WAL keeps readers (``flash platform status``) from blocking the platform.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable against process crashes (the case that matters here: a
    # killed platform); only an OS crash can lose the last transactions.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = False) -> Iterator[None]:
    """Group statements into one atomic change (the connection autocommits otherwise); rolled
    back when the block raises. ``immediate`` takes the write lock at once (BEGIN IMMEDIATE),
    for read-then-write changes another process may race."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
