"""``flash init NAME``: a new project from the template in ``template/``.

The template is a complete app (a GPU and a CPU queue-based endpoint, a load-balanced endpoint
with ``POST /process`` and ``GET /health``) that builds and deploys as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InitError

TEMPLATE = Path(__file__).parent / "template"
TEMPLATE_FILES = (
    "gpu_worker.py",
    "cpu_worker.py",
    "lb_worker.py",
    "requirements.txt",
    "README.md",
    ".gitignore",
)
_PLACEHOLDER = "__PROJECT_NAME__"


def init_project(target: Path, *, force: bool = False, name: str | None = None) -> Path:
    """Create a project in ``target`` (created if missing) and return its resolved path.

    Refuses a directory that exists and is not empty unless ``force``; with ``force`` the
    template's files replace same-named files and everything else is left alone.
    """
    target = Path(target).expanduser().resolve()
    name = name or target.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InitError(
            f"{name!r} is not a usable project name; use letters, digits, '-', '_' or '.'"
        )
    if target.exists() and not target.is_dir():
        raise InitError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise InitError(
            f"{target} already exists and is not empty; choose a new name, or pass --force to "
            "write the template's files into it (same-named files are replaced)"
        )
    missing = [f for f in TEMPLATE_FILES if not (TEMPLATE / f).is_file()]
    if missing:  # a broken installation, not a user error, but say what is wrong
        raise InitError(f"the project template is incomplete (missing {', '.join(missing)})")
    target.mkdir(parents=True, exist_ok=True)
    for file in TEMPLATE_FILES:
        text = (TEMPLATE / file).read_text(encoding="utf-8").replace(_PLACEHOLDER, name)
        (target / file).write_text(text, encoding="utf-8")
    return target
