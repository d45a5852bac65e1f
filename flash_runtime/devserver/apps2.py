"""``flash dev MODULE``: a Runpod SDK 2.0 project's ``@runpod.local_entrypoint`` against live
endpoints on the local platform, run again whenever a project file changes.

What ``rp flash dev`` does against Runpod, on the local platform: the project is deployed with
the 2.0 SDK's own deployer (``rp flash deploy MODULE --env live``) to each app's ``live``
environment, then the module's entrypoint runs with the SDK's handles resolving to that
environment (``FLASH_ENVIRONMENT=live``); ``.remote()`` and friends reach the live workers
through the platform's sentinel and TLS front. A saved change deploys again (the platform rolls
the workers) and runs the entrypoint again; Ctrl-C deletes the ``live`` environments it made.
``--once`` deploys, runs and cleans up once (for scripts and CI).

The 2.0 SDK runs in a child interpreter: the one given by ``FLASH_SDK2_PYTHON``, else this one
(``flash`` itself needs no SDK, and the 1.x ``runpod`` that ``flash-runtime[runpod]`` brings
cannot live beside 2.0 in one environment). Dependencies are vendored by that SDK with pip, from
the package index (or wherever pip is configured to look).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import FlashError
from ..protocol.local import PlatformConfig

ENVIRONMENT = "live"
SCAN = """
import json, sys
from pathlib import Path
from runpod.apps.discovery import discover_apps
from runpod.apps.entrypoint import get_entrypoint
apps = discover_apps(Path(sys.argv[1]))
print(json.dumps({"apps": [a.name for a in apps], "entrypoint": get_entrypoint() is not None}))
"""
RUN = """
import sys
from pathlib import Path
from runpod.apps.discovery import discover_apps
from runpod.apps.entrypoint import get_entrypoint, run_entrypoint
discover_apps(Path(sys.argv[1]))
run_entrypoint(get_entrypoint())
"""
# `rp flash deploy`, with one change: the SDK names an endpoint's template after the app and
# resource only ("{app}-{resource}-template"), and template names are unique (on Runpod and
# here), so the live environment's templates get the environment's name as a suffix; without
# it a project deployed to its default environment could not have a live one.
DEPLOY = f"""
import sys
import runpod.apps.deploy as deploy
made = getattr(deploy, "_deployed_endpoint_input", None)
if made is not None:
    def named(*args, **kwargs):
        payload = made(*args, **kwargs)
        payload["template"]["name"] += "-{ENVIRONMENT}"
        return payload
    deploy._deployed_endpoint_input = named
from runpod.rp_cli.main import cli
cli(sys.argv[1:])
"""
TEMPLATES = """
query env($input: FlashEnvironmentByNameInput!) {
  flashEnvironmentByName(input: $input) { id endpoints { template { name } } }
}
"""


def sdk2_python() -> str:
    """The interpreter that runs the 2.0 SDK; FlashError saying how to get one when none does."""
    python = os.environ.get("FLASH_SDK2_PYTHON") or sys.executable
    probe = subprocess.run(
        [python, "-c", "import runpod.apps, runpod.rp_cli.main"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise FlashError(
            f"{python} cannot import the Runpod SDK 2.0 (runpod.apps): install it there "
            "(pip install --pre 'runpod>=2.0.0rc2'), or set FLASH_SDK2_PYTHON to a Python that "
            f"has it ({probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ''})"
        )
    return python


def client_env(config: PlatformConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with what the 2.0 SDK needs to talk to
    the local platform (``tls.client_environment``)."""
    from ..platform import tls

    return {**(os.environ if base is None else base), **tls.client_environment(config)}


class Sdk2Dev:
    def __init__(
        self,
        module: Path,
        config: PlatformConfig,
        say: Callable[[str], None],
        python: str | None = None,
    ) -> None:
        self.module = module.resolve()
        self.project = self.module.parent
        self.config = config
        self.say = say
        self.python = python or sdk2_python()
        self.env = client_env(config)
        self.env.pop("RUNPOD_DEV_SESSION", None)  # resolve through the platform, not rp's dev
        self.apps: list[str] = []

    def _child(self, source: str, *args: str, env: dict[str, str] | None = None) -> int:
        return subprocess.run(
            [self.python, "-c", source, *args], cwd=self.project, env=env or self.env
        ).returncode

    def scan(self) -> list[str]:
        done = subprocess.run(
            [self.python, "-c", SCAN, str(self.module)],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise FlashError(f"{self.module.name} does not import:\n{done.stderr.strip()[-2000:]}")
        found = json.loads(done.stdout.strip().splitlines()[-1])
        if not found["apps"]:
            raise FlashError(f"{self.module.name} defines no runpod.App")
        if not found["entrypoint"]:
            raise FlashError(
                f"{self.module.name} has no @runpod.local_entrypoint: define one (a function, "
                "sync or async, that calls the app's resources)"
            )
        return list(found["apps"])

    def cycle(self) -> int:
        """Deploy to ``live`` and run the entrypoint once; the entrypoint's exit code."""
        self.apps = sorted(set(self.apps) | set(self.scan()))
        self.say(f"deploying {', '.join(self.apps)} to their {ENVIRONMENT} environment ...")
        started = time.perf_counter()
        code = self._child(DEPLOY, "flash", "deploy", str(self.module), "--env", ENVIRONMENT)
        if code != 0:
            self.say(f"the deploy failed (exit code {code}); fix the project and save again")
            return code
        self.say(f"deployed in {time.perf_counter() - started:.1f}s; running the entrypoint")
        code = self._child(
            RUN, str(self.module), env={**self.env, "FLASH_ENVIRONMENT": ENVIRONMENT}
        )
        self.say(f"the entrypoint exited with code {code}")
        return code

    def cleanup(self) -> None:
        """Delete the ``live`` environments this session deployed (their endpoints stop)."""
        import asyncio

        from ..protocol.controlplane import ControlPlaneClient
        from ..protocol.target import local_target

        async def delete() -> None:
            async with ControlPlaneClient(local_target(self.config)) as client:
                for app in await client.list_apps():
                    if app["name"] not in self.apps:
                        continue
                    name = app["name"]
                    if ENVIRONMENT not in [e["name"] for e in app.get("flashEnvironments") or []]:
                        continue
                    found = await client.execute(
                        TEMPLATES, {"input": {"flashAppId": app["id"], "name": ENVIRONMENT}}
                    )
                    env = found["flashEnvironmentByName"]
                    templates = [e["template"]["name"] for e in env["endpoints"] if e["template"]]
                    await client.delete_environment(env["id"])
                    for template in templates:  # the next session makes them again
                        await client.delete_template(template)
                    self.say(f"deleted {name}/{ENVIRONMENT}")

        asyncio.run(delete())

    def run(self, *, once: bool, reload: bool) -> int:
        try:
            code = self.cycle()
            if once or not reload:
                return code
            from watchfiles import watch

            self.say(f"watching {self.project} (Ctrl-C stops and deletes the live endpoints)")
            for _changes in watch(self.project, watch_filter=_python_or_config):
                code = self.cycle()
            return code
        finally:
            if self.apps:
                self.cleanup()


def _python_or_config(change: object, path: str) -> bool:
    name = Path(path).name
    return (name.endswith(".py") or name in ("requirements.txt", ".runpodignore")) and not any(
        part in (".venv", "venv", "env", "__pycache__", ".git") for part in Path(path).parts
    )
