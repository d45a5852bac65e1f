"""A platform asked to listen beyond loopback refuses, unless told it is meant (then it warns):
every load-balanced endpoint's port would be open to the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flash_runtime.testing.net import free_port


def test_a_non_loopback_address_needs_an_explicit_opt_in(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    env.update(
        FLASH_HOME=str(tmp_path / "home"), FLASH_PLATFORM_URL=f"http://0.0.0.0:{free_port()}"
    )
    done = subprocess.run(
        [sys.executable, "-m", "flash_runtime.platform.server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "FLASH_PLATFORM_ALLOW_REMOTE=1" in done.stderr
