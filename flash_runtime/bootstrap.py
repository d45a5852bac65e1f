"""``python -m flash_runtime.bootstrap``: the worker image's entry point."""

from __future__ import annotations

import sys

from .worker.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
