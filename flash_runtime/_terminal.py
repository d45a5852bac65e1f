"""What every ``flash`` command prints the same way: a rich console, and a fatal error."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


def new_console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def fail(message: object) -> NoReturn:
    """Print ``Error: message`` in red on stderr and exit 1 (no traceback: the message says
    what was wrong and what to do)."""
    from rich.text import Text

    new_console(stderr=True).print(Text(f"Error: {message}", style="red"), soft_wrap=True)
    sys.exit(1)


def fail_json(err: BaseException) -> NoReturn:
    """``--json``'s failure: one JSON object on stdout, ``{"error": {"type", "message"}}``, so a
    script reading stdout always gets JSON; the red line still goes to stderr; exit 1."""
    import json

    print(json.dumps({"error": {"type": type(err).__name__, "message": str(err)}}), flush=True)
    fail(err)


def handles_errors(command: F) -> F:
    """Wraps a click command: a FlashError becomes the red ``Error: ...`` line (and, when the
    command was given ``--json``, a JSON error object on stdout) and exit code 1; Ctrl-C says
    "cancelled" and exits 130."""
    import functools

    from .errors import FlashError

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FlashError as err:
            if kwargs.get("as_json"):
                fail_json(err)
            fail(err)
        except KeyboardInterrupt:
            new_console(stderr=True).print("[yellow]cancelled[/yellow]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
