"""The Runpod API key of the person at this machine, and where ``flash login`` keeps it.

The key is looked up where runpod-flash 1.21 looks, in its order:

1. ``RUNPOD_API_KEY`` in the environment;
2. ``RUNPOD_API_KEY`` in the project's ``.env`` (the first ``.env`` from the working directory
   upwards; the ``flash`` command loads that file into its environment at start, existing
   variables winning, so this is step 1 for the CLI);
3. the credentials file ``~/.runpod/config.toml`` (``FLASH_CREDENTIALS_FILE`` overrides), shared
   with the official ``runpod`` SDK and ``runpodctl``: ``[default] api_key``, or ``runpodctl``'s
   top-level ``apikey`` when there is no ``[default]`` table.

``flash login`` writes ``[default] api_key`` there, leaving everything else in the file as it
was, and makes the file readable by its owner only.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import MutableMapping
from pathlib import Path

from ..errors import FlashError

API_KEY_VAR = "RUNPOD_API_KEY"


def credentials_file() -> Path:
    """``FLASH_CREDENTIALS_FILE``, else ``~/.runpod/config.toml``."""
    explicit = os.environ.get("FLASH_CREDENTIALS_FILE")
    return Path(explicit).expanduser() if explicit else Path.home() / ".runpod" / "config.toml"


def load_dotenv(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Load the project's ``.env`` (the first one in the working directory or a directory above
    it) into ``environ`` (default ``os.environ``), never replacing a variable already set;
    returns the file loaded, if any. Without python-dotenv (the worker core alone) nothing is
    read; a file it cannot read is skipped, as the reference skips it."""
    try:
        import dotenv
    except ImportError:
        return None
    found = dotenv.find_dotenv(usecwd=True)
    if not found:
        return None
    target = os.environ if environ is None else environ
    try:
        values = dotenv.dotenv_values(found)
    except (OSError, UnicodeError):
        return None
    for name, value in values.items():
        if value is not None and name not in target:
            target[name] = value
    return Path(found)


def stored_api_key(path: Path | None = None) -> str | None:
    """The key in the credentials file, or None (no file, unreadable, or no key in it)."""
    path = path or credentials_file()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, tomllib.TOMLDecodeError):
        return None
    section = document.get("default")
    # runpodctl's top-level spelling counts only without a [default] table
    key = section.get("api_key") if isinstance(section, dict) else document.get("apikey")
    return key.strip() if isinstance(key, str) and key.strip() else None


def api_key() -> str | None:
    """The Runpod API key: the environment (with the project's ``.env``), else the credentials
    file."""
    key = os.environ.get(API_KEY_VAR, "").strip()
    if key:
        return key
    from_dotenv: dict[str, str] = {}
    load_dotenv(from_dotenv)
    key = from_dotenv.get(API_KEY_VAR, "").strip()
    return key or stored_api_key()


def save_api_key(key: str, path: Path | None = None) -> Path:
    """Store ``key`` as ``[default] api_key`` in the credentials file, keeping the rest of the
    file (comments, ``runpodctl``'s keys, other profiles) as it was; mode 0600."""
    import tomlkit
    import tomlkit.exceptions

    key = key.strip()
    if not key or any(ch.isspace() for ch in key):
        raise FlashError("an API key is one word without spaces; copy it again from the console")
    path = path or credentials_file()
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeError) as err:
        raise FlashError(f"cannot read {path}: {err}") from None
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as err:
        raise FlashError(
            f"{path} is not valid TOML ({err}); mend or remove it, then log in again"
        ) from None
    section = document.get("default")
    if section is None:
        section = tomlkit.table()
        document["default"] = section
    elif not isinstance(section, dict):
        raise FlashError(f"{path}: 'default' is not a table; mend or remove it, then log in again")
    section["api_key"] = key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(tomlkit.dumps(document))
    os.chmod(path, 0o600)  # a file made earlier by another tool keeps no wider mode
    return path
