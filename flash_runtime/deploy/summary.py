"""What ``flash deploy`` prints when it is done: the endpoints grouped by type, each with a
curl line that works as printed once ``RUNPOD_API_KEY`` holds the target's key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from ..protocol.target import Target
from .deployer import DeployedEndpoint, DeployResult

if TYPE_CHECKING:
    from rich.console import Console


def curl_line(endpoint: DeployedEndpoint) -> str:
    """A ready-to-run request: ``/runsync`` for queue-based endpoints; for load-balanced ones a
    route that needs no arguments if there is one (a GET without path parameters), else the
    first route."""
    body: str | None
    if endpoint.type == "qb":
        method, url, body = "POST", f"{endpoint.url}/runsync", '{"input": {}}'
    else:
        routes = [r.split(" ", 1) for r in endpoint.routes] or [["GET", "/ping"]]
        bare_gets = [r for r in routes if r[0] == "GET" and "{" not in r[1]]
        method, path = (bare_gets or routes)[0]
        url, body = f"{endpoint.url}{path}", None if method == "GET" else "{}"
    lines = [f"curl -X {method} {url}"]
    if body is not None:
        lines.append('-H "Content-Type: application/json"')
    lines.append('-H "Authorization: Bearer $RUNPOD_API_KEY"')
    if body is not None:
        lines.append(f"-d '{body}'")
    return " \\\n        ".join(lines)


def print_deployment(console: Console, result: DeployResult, target: Target) -> None:
    """The "Deployment Complete" block."""
    console.print()
    console.print(
        f"[green]✓ Deployment Complete[/green]  [dim]app {escape(result.app)} · environment "
        f"{escape(result.environment)} · build {result.build_id[:8]} · "
        f"{result.seconds:.1f}s[/dim]",
        soft_wrap=True,
    )
    groups = (
        ("Load-balanced endpoints:", [ep for ep in result.endpoints if ep.type == "lb"]),
        ("Queue-based endpoints:", [ep for ep in result.endpoints if ep.type == "qb"]),
    )
    for title, endpoints in groups:
        if not endpoints:
            continue
        console.print(f"\n{title}")
        for ep in endpoints:
            note = "" if ep.action == "created" else f" [dim]{ep.action}[/dim]"
            console.print(f"  {escape(ep.url)}  ({escape(ep.resource)}){note}", soft_wrap=True)
            for route in ep.routes:
                method, path = route.split(" ", 1)
                console.print(f"    {method:<6} {escape(path)}", soft_wrap=True)
        console.print("\n  Try it:")
        for ep in endpoints:
            console.print(f"    {escape(curl_line(ep))}", soft_wrap=True, highlight=False)
    if result.removed:
        console.print(f"\nRemoved endpoints: {escape(', '.join(result.removed))}")
    console.print(f"\n[dim]$RUNPOD_API_KEY: {escape(target.key_hint)}.[/dim]")
