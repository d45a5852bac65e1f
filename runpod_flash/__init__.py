"""Alias of :mod:`flash_runtime`, so apps written for ``runpod_flash`` run unchanged."""

from flash_runtime import *  # noqa: F403  (the alias re-exports exactly the public API)
from flash_runtime import __all__ as __all__
