"""Where the local platform lives and how to reach it: its address, key and on-disk layout.

Shared by every side: the platform serves at this address with this key; the CLI, the dev
server and scripts that call deployed endpoints find it here.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

DEFAULT_URL = "http://127.0.0.1:8765"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def flash_home() -> Path:
    """``FLASH_HOME`` (default ``~/.flash``): platform state, artifacts, logs, caches."""
    return Path(os.environ.get("FLASH_HOME") or Path.home() / ".flash").expanduser()


@dataclass(frozen=True)
class PlatformConfig:
    """The platform's address, key and on-disk layout."""

    home: Path
    url: str
    api_key: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8765

    @property
    def tls_port(self) -> int:
        """The TLS front's port (``platform/tls.py``): ``FLASH_PLATFORM_TLS_PORT``, else the
        port after the platform's."""
        configured = os.environ.get("FLASH_PLATFORM_TLS_PORT", "").strip()
        return int(configured) if configured.isdigit() else self.port + 1

    @property
    def tls_url(self) -> str:
        """The platform over TLS, under a name whose ``{endpoint_id}.`` subdomains are loopback
        too (what the Runpod SDK 2.0 needs: ``RUNPOD_ENDPOINT_BASE_URL={tls_url}/v2``)."""
        return f"https://flash.localhost:{self.tls_port}"

    @property
    def root(self) -> Path:
        return self.home / "platform"

    @property
    def db_path(self) -> Path:
        return self.root / "platform.db"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def apps_dir(self) -> Path:
        """Extraction targets, one per artifact, shared by that artifact's workers."""
        return self.root / "apps"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def images_dir(self) -> Path:
        """Where image environments are kept (``FLASH_PLATFORM_IMAGE_ENVS`` overrides it)."""
        configured = os.environ.get("FLASH_PLATFORM_IMAGE_ENVS")
        return Path(configured) if configured else self.root / "images"

    @property
    def pid_file(self) -> Path:
        return self.root / "platform.pid"

    @classmethod
    def load(cls, home: Path | None = None) -> PlatformConfig:
        """The configuration, creating the API key on first use (kept in ``platform.json``)."""
        home = home or flash_home()
        root = home / "platform"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings_path = root / "platform.json"
        settings: dict[str, str] = {}
        if settings_path.exists():
            settings = orjson.loads(settings_path.read_bytes())
        if not settings.get("api_key"):
            settings["api_key"] = "fl_" + secrets.token_urlsafe(24)
            tmp = settings_path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(settings))
            tmp.chmod(0o600)
            tmp.replace(settings_path)
        url = (os.environ.get("FLASH_PLATFORM_URL") or DEFAULT_URL).rstrip("/")
        return cls(home=home, url=url, api_key=settings["api_key"])
