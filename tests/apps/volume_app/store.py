"""A queue endpoint that keeps notes on its network volume."""

import os
from pathlib import Path

from runpod_flash import Endpoint, NetworkVolume

VERSION = 1


@Endpoint(name="notes", cpu="cpu3c-1-2", volume=NetworkVolume(name="notes-data", size=10))
def notes(write: str = "") -> dict:
    root = Path(os.environ.get("RUNPOD_VOLUME_PATH", "/runpod-volume"))
    note = root / "note.txt"
    if write:
        note.write_text(write)
    return {"note": note.read_text() if note.exists() else None, "version": VERSION}
