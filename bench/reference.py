"""The reference implementation, runpod-flash 1.21.0, in its own virtual environment.

:func:`ensure_venv` makes it at ``bench/.cache/reference-<version>-py<X.Y>/`` with
:func:`flash_runtime.testing.reference.ensure_reference` (the tests use the same), once
(``--refresh-reference`` starts over). The same interpreter version as ours, so both sides run
on identical Python.

That environment stands in for the reference's worker image, whose Python environment holds
runpod-flash, runpod, FastAPI and uvicorn; ``bench/refimage/`` holds the image's two entry
points, reproduced (see its README section in ``bench/README.md``).
"""

from __future__ import annotations

from flash_runtime.testing.reference import (
    MARKER,
    PY,
    REQUIREMENT,
    VERSION,
    ReferenceEnv,
    default_root,
    ensure_reference,
)

from .common import CACHE, log

RefEnv = ReferenceEnv
__all__ = ["PY", "REQUIREMENT", "VERSION", "RefEnv", "ensure_venv"]


def ensure_venv(refresh: bool = False) -> RefEnv:
    root = default_root(CACHE)
    if refresh or not (root / MARKER).is_file():
        log(f"creating the reference's environment: {root} (pip install {REQUIREMENT})")
    try:
        ref = ensure_reference(root, refresh=refresh)
    except RuntimeError as err:
        raise SystemExit(str(err)) from None
    if ref.setup_seconds:
        log(f"reference environment ready in {ref.setup_seconds:.0f}s")
    return ref
