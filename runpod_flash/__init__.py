"""Alias of :mod:`flash_runtime`, so apps written for ``runpod_flash`` run unchanged.

Names are loaded on first use, as :mod:`flash_runtime` loads them, so ``import runpod_flash``
(every worker's first line) stays cheap.
"""

from typing import TYPE_CHECKING, Any

from flash_runtime import __all__ as __all__

if TYPE_CHECKING:
    from flash_runtime import *  # noqa: F403  (for type checkers: exactly the public API)


def __getattr__(name: str) -> Any:
    import flash_runtime

    value = getattr(flash_runtime, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
