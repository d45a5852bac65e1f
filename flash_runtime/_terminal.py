"""What every ``flash`` command prints the same way: a rich console, and a fatal error."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from rich.console import Console


def new_console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def fail(message: object) -> NoReturn:
    """Print ``Error: message`` in red on stderr and exit 1 (no traceback: the message says
    what was wrong and what to do)."""
    from rich.text import Text

    new_console(stderr=True).print(Text(f"Error: {message}", style="red"), soft_wrap=True)
    sys.exit(1)
