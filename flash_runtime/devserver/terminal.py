"""What ``flash run`` prints: its own progress, the requests it forwards, the workers' output."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console

_LABEL_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta")
# The runtime's own routine lines (the platform's worker start/exit notes, the worker's INFO
# records): shown dim, so that the user's output stands out.
_RUNTIME_LINE = re.compile(
    r"^(?:\[flash platform\] |(?:\[[^\]]+\] )?[\d-]+ [\d:,]+ (?:INFO|DEBUG) flash_runtime\.)"
)


def clock() -> str:
    """The time of day, as lines start with it."""
    return time.strftime("%H:%M:%S")


class Terminal:
    """Lines on a rich console; long lines are never wrapped (they are copied and grepped)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._styles: dict[str, str] = {}

    def markup(self, text: str) -> None:
        """A line in rich markup (callers escape what they did not write)."""
        self.console.print(text, soft_wrap=True, highlight=False)

    def note(self, text: str) -> None:
        """A dim line."""
        self.markup(f"[dim]{escape(text)}[/dim]")

    def ok(self, text: str) -> None:
        """Something finished well."""
        self.markup(f"[dim]{clock()}[/dim] [green]✓[/green] {escape(text)}")

    def step(self, text: str) -> None:
        """Something started."""
        self.markup(f"[dim]{clock()}[/dim] [cyan]↻[/cyan] {escape(text)}")

    def warn(self, text: str) -> None:
        """Something to look at."""
        self.markup(f"[dim]{clock()}[/dim] [yellow]![/yellow] {escape(text)}")

    def error(self, title: str, detail: str = "") -> None:
        """A failure: its title, then its detail indented."""
        self.markup(f"[dim]{clock()}[/dim] [red]✗ {escape(title)}[/red]")
        for line in detail.rstrip().splitlines():
            self.markup(f"    [red]{escape(line)}[/red]")

    def label_style(self, label: str) -> str:
        """The colour of an endpoint's name, the same for its every line."""
        style = self._styles.get(label)
        if style is None:
            style = self._styles[label] = _LABEL_STYLES[len(self._styles) % len(_LABEL_STYLES)]
        return style

    def worker_line(self, label: str, line: str) -> None:
        """One line of a worker's output, ``[endpoint] line``."""
        style = "dim" if _RUNTIME_LINE.match(line) else ""
        if line.startswith("[flash platform]") and re.search(r"exited with code -?[1-9]", line):
            style = "yellow"  # a crash (the platform restarts it; the lines above say why)
        text = Text(f"[{label}] ", style=self.label_style(label))
        text.append(line, style=style)
        self.console.print(text, soft_wrap=True, highlight=False)

    def access(self, method: str, path: str, status: int, seconds: float, ref: str = "") -> None:
        """One forwarded request."""
        color = "green" if status < 400 else "yellow" if status < 500 else "red"
        extra = f"  [dim]{escape(ref)}[/dim]" if ref else ""
        self.markup(
            f"[dim]{clock()}[/dim] {escape(method)} {escape(path)} [{color}]{status}[/{color}] "
            f"[dim]{seconds * 1000:.0f} ms[/dim]{extra}"
        )
