"""Worker logs, read back: each line with its time, endpoint, worker and request or job id.

The supervisor writes each worker's output to ``logs/{endpoint id}/{worker id}.log``. Workers
write text lines (``2026-12-01T14:00:00.123Z INFO logger [<id>] message``; what user code prints
during a request starts with ``[<id>]``) or JSON lines (``FLASH_LOG_FORMAT=json``); the
supervisor's own lines (``... [flash platform] worker ... started``) open and close each file.
:func:`read` parses them all into one shape, and selects and merges them (by time, across
workers and endpoints); a line without a time of its own (a traceback, a print outside a
request, a subprocess's output) takes the time of the line before it. ``flash logs`` reads the
files through it; ``GET /platform/logs`` serves the same to scripts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..protocol.local import PlatformConfig

_TIME = r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"
_RECORD = re.compile(
    _TIME
    + r" (?P<level>[A-Z]+) (?P<logger>\S+) (?:\[(?P<tag>[^\]\s]+(?: [^\]\s]+)?)\] )?(?P<message>.*)"
)
_PLATFORM = re.compile(_TIME + r" \[flash platform\] (?P<message>.*)")
_TAGGED = re.compile(r"\[(?P<tag>[^\]\s]+(?: [^\]\s]+)?)\] (?P<message>.*)")
MAX_READ = 16 * 1024 * 1024  # bytes read from one file in one call


@dataclass(frozen=True)
class Endpoint:
    """An endpoint whose logs are read: its id, name and type ("qb" or "lb")."""

    id: str
    name: str
    type: str = "qb"


def epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def parse(line: str, endpoint: Endpoint, worker: str, last_time: str | None) -> dict[str, Any]:
    """One line of a worker's log as ``{time, endpoint, name, worker, level, logger, message,
    request_id?, job_id?}``."""
    entry: dict[str, Any] = {"time": last_time, "endpoint": endpoint.id, "name": endpoint.name,
                             "worker": worker, "level": None, "logger": None}  # fmt: skip
    if line.startswith("{"):
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            entry.update(
                {
                    k: data[k]
                    for k in ("time", "level", "logger", "request_id", "job_id")
                    if k in data
                }
            )
            entry["message"] = str(data.get("message", ""))
            if data.get("exception"):
                entry["message"] += "\n" + str(data["exception"])
            return entry
    tag = None
    if found := _RECORD.fullmatch(line):
        entry.update(time=found["time"], level=found["level"], logger=found["logger"])
        tag, message = found["tag"], found["message"]
    elif found := _PLATFORM.fullmatch(line):
        entry.update(time=found["time"], level="INFO", logger="flash.platform")
        message = found["message"]
    elif found := _TAGGED.fullmatch(line):
        tag, message = found["tag"], found["message"]
    else:
        message = line
    if tag:
        first, _, second = tag.partition(" ")
        if endpoint.type == "qb":
            entry["job_id"] = first
            if second:
                entry["request_id"] = second
        else:
            entry["request_id"] = first
    entry["message"] = message
    return entry


def _files(config: PlatformConfig, endpoint: Endpoint) -> list[Path]:
    directory = config.logs_dir / endpoint.id
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".log")
    except OSError:
        return []


def matches(entry: dict[str, Any], request: str | None, since: float | None) -> bool:
    if request and request not in (entry.get("request_id"), entry.get("job_id")):
        return False
    if since is not None:
        at = epoch(entry.get("time"))
        return at is not None and at >= since
    return True


def read(
    config: PlatformConfig,
    endpoints: Sequence[Endpoint],
    *,
    since: float | None = None,
    worker: str | None = None,
    request: str | None = None,
    tail: int | None = None,
    cursor: dict[str, list[Any]] | None = None,
    raw: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """The selected lines of ``endpoints``' worker logs, oldest first (at most the last
    ``tail``), and a cursor: given back, the next call returns only lines written since
    (``flash logs --follow``). The cursor maps each file to its offset and last time.
    ``raw``: each line also as it is in the file (``raw``), as the dev server prints it."""
    cursor = dict(cursor or {})
    lines: list[dict[str, Any]] = []
    for endpoint in endpoints:
        for path in _files(config, endpoint):
            if worker and path.stem != worker:
                continue
            offset, last_time = cursor.get(str(path), [0, None])
            try:
                size = path.stat().st_size
                if size < offset:  # copy-truncated by rotation: from its start
                    offset = 0
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read(MAX_READ)
            except OSError:
                continue
            complete = data[: data.rfind(b"\n") + 1]  # a partial last line waits for its end
            for text_line in complete.decode(errors="replace").splitlines():
                entry = parse(text_line, endpoint, path.stem, last_time)
                if raw:
                    entry["raw"] = text_line
                last_time = entry["time"]
                if matches(entry, request, since):
                    lines.append(entry)
            cursor[str(path)] = [offset + len(complete), last_time]
    lines.sort(key=lambda e: e.get("time") or "")
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return lines, cursor


def text(entry: dict[str, Any]) -> str:
    """A line as ``flash logs`` prints it."""
    ids = " ".join(f"{k}={entry[k]}" for k in ("job_id", "request_id") if entry.get(k))
    level = f" {entry['level']}" if entry.get("level") else ""
    return (
        f"{entry.get('time') or '-':24} {entry['name']}/{entry['worker']}{level}"
        f"{f' [{ids}]' if ids else ''} {entry['message']}"
    )


async def query(runtime: Any, params: Any) -> dict[str, Any]:
    """``GET /platform/logs``: ``endpoint`` (ids, repeated; default all), ``since`` (unix
    seconds), ``worker``, ``request``, ``tail``, ``cursor`` (from the previous answer),
    ``raw=1`` (each line also as written)."""
    import asyncio

    from .serverless import ApiError

    wanted = params.getlist("endpoint")
    known = {ep.id: ep for ep in runtime.endpoints.values()}
    unknown = [e for e in wanted if e not in known and not (runtime.config.logs_dir / e).is_dir()]
    if unknown:
        raise ApiError(404, f"no endpoint {', '.join(unknown)} on this platform")
    chosen = [
        Endpoint(e, known[e].spec.name, known[e].spec.type) if e in known else Endpoint(e, e)
        for e in (wanted or list(known))
    ]
    try:
        since = float(params["since"]) if params.get("since") else None
        tail = int(params["tail"]) if params.get("tail") else None
        cursor = orjson.loads(params["cursor"]) if params.get("cursor") else None
    except (ValueError, orjson.JSONDecodeError):
        raise ApiError(400, "since (unix seconds), tail (lines) and cursor (JSON) are numbers "
                       "and JSON as the previous answer gave them") from None  # fmt: skip
    if cursor is not None and not isinstance(cursor, dict):
        raise ApiError(400, "cursor must be the JSON object the previous answer gave")
    lines, cursor = await asyncio.to_thread(
        read,
        runtime.config,
        chosen,
        since=since,
        worker=params.get("worker") or None,
        request=params.get("request") or None,
        tail=tail,
        cursor=cursor,
        raw=params.get("raw") == "1",
    )
    return {"lines": lines, "cursor": cursor}
