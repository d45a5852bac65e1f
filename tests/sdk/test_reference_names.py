"""Every public name of runpod-flash 1.21's ``runpod_flash``: importable here with the same
values, or documented as not applicable (docs/reference/differences.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO

from flash_runtime.testing.reference import default_root, ensure_reference

# What has no counterpart here, each with its entry in the differences page.
NOT_APPLICABLE = {"FlashApp", "ResourceManager"}

PROBE = """
import json, sys
import runpod_flash as m
out = {"names": sorted(m.__all__)}
for name in m.__all__:  # each one resolves (lazily loaded names included)
    getattr(m, name)
out["scaler"] = [e.value for e in m.ServerlessScalerType]
out["types"] = [e.value for e in m.ServerlessType]
out["cpu_dcs"] = sorted(d.value for d in m.CPU_DATACENTERS)
out["workers"] = [m.DEFAULT_WORKERS_MIN, m.DEFAULT_WORKERS_MAX]
out["enums"] = {n: sorted(e.value for e in getattr(m, n))
                for n in ("GpuGroup", "GpuType", "CpuInstanceType", "DataCenter", "CudaVersion")}
print(json.dumps(out))
"""


def _probe(python: str, cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-W", "ignore", "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_every_reference_name_is_here_or_documented_as_not_applicable(tmp_path: Path) -> None:
    reference = ensure_reference(default_root(REPO / "build"))
    theirs = _probe(reference.python, tmp_path)  # its own runpod_flash, not ours
    ours = _probe(sys.executable, tmp_path)
    names = set(theirs["names"])
    assert len(names) == 25 and names >= NOT_APPLICABLE
    missing = names - NOT_APPLICABLE - set(ours["names"])
    assert not missing, f"runpod_flash names without a counterpart: {sorted(missing)}"
    for key in ("scaler", "types", "cpu_dcs", "workers"):
        assert ours[key] == theirs[key], key
    for enum, values in theirs["enums"].items():
        assert set(values) <= set(ours["enums"][enum]), enum

    differences = (REPO / "docs" / "reference" / "differences.md").read_text()
    for name in NOT_APPLICABLE:
        assert f"`{name}`" in differences, f"{name} is not documented as not applicable"
