"""Whether a machine has the system (apt) packages a resource or a task asks for."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence


def missing_system_packages(packages: Sequence[str]) -> list[str]:
    """The apt packages of ``packages`` this machine has neither installed (dpkg) nor as a
    command on PATH."""
    missing = []
    dpkg = shutil.which("dpkg-query")
    for package in packages:
        if shutil.which(package):
            continue
        if dpkg is not None:
            done = subprocess.run(
                [dpkg, "-W", "-f=${Status}", package], capture_output=True, text=True
            )
            if done.returncode == 0 and "install ok installed" in done.stdout:
                continue
        missing.append(package)
    return missing
