"""``python -m flash_runtime.pack [PROJECT_DIR] [options]``: the same command as ``flash build``."""

from __future__ import annotations

from .cli import build_command

if __name__ == "__main__":
    build_command.main(prog_name="python -m flash_runtime.pack")
