"""The ``flash`` console script: the command line, or what to install to get it.

``flash-runtime`` alone is the worker core; the command line's libraries come with the ``cli``
extra. Without them ``flash`` says so instead of failing with an import traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as err:
        sys.exit(
            f"flash: the command line needs its libraries ({err.name} is not installed); "
            "install them with: pip install 'flash-runtime[cli]'"
        )
    from .cli import main as cli_main

    cli_main()
