"""F2: nothing under FLASH_HOME is readable by other users: the database (job inputs and
outputs, the keys in template envs), logs, artifacts and extracted apps."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from conftest import APPS
from support import FlashCLI


def test_everything_under_flash_home_is_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "platform").mkdir(parents=True)
    home.chmod(0o755)  # a home made by hand, or by an older version
    (home / "platform").chmod(0o755)
    project = tmp_path / "app"
    shutil.copytree(APPS / "qb_sync", project)
    flash = FlashCLI(home, project)

    try:
        flash("deploy", "--json")  # starts the platform, boots a worker (its boot check)
        status = flash.status()
        assert status["endpoints"], status
    finally:
        flash.stop()
    log = (home / "platform" / "logs" / "platform.log").read_text()
    assert f"{home} was open to other users (mode 755): made private" in log

    def private(path: Path) -> bool:
        return not stat.S_IMODE(path.lstat().st_mode) & 0o077

    # What the home and its platform directory hold at the top is private itself; anything
    # deeper is, or sits in a private directory (other users cannot reach it).
    top = [home, *home.iterdir(), *(home / "platform").iterdir()]
    assert [str(p) for p in top if not p.is_symlink() and not private(p)] == []
    reachable = [
        str(path.relative_to(home))
        for path in home.rglob("*")
        if not path.is_symlink()
        and not private(path)
        and all(not private(parent) for parent in path.parents if parent.is_relative_to(home))
    ]
    assert reachable == []
    # The platform's own writes are private file by file (it runs with umask 077).
    platform_files = [p for p in (home / "platform").rglob("*") if p.is_file()]
    assert platform_files and all(private(p) for p in platform_files), [
        str(p) for p in platform_files if not private(p)
    ]
    kinds = {p.relative_to(home / "platform").parts[0] for p in (home / "platform").rglob("*")}
    assert {"artifacts", "apps", "logs", "platform.db", "platform.json"} <= kinds
