"""Apps and environments: the operations behind ``flash app``, ``flash env`` and
``flash undeploy``, as plain async functions over the control-plane client.

Deleting an app or an environment deletes its endpoints first, one by one, as the reference
implementation does against Runpod: the endpoints are the resources that cost money, and a
failure then names the endpoint that is left. Each endpoint's template goes with it when the
deployer made it (its name begins with :func:`template_prefix`): Runpod keeps templates after
their endpoints, and template names are unique, so a left-over one would block the next
endpoint of the same configuration.
"""

from __future__ import annotations

from typing import Any

from ..protocol.controlplane import ControlPlaneClient, GraphQLRequestError


def template_prefix(app: str, environment: str) -> str:
    """How the names of the templates the deployer creates for an environment begin."""
    return f"{app}__{environment}__"


async def delete_endpoint(
    client: ControlPlaneClient, endpoint: dict[str, Any], prefix: str
) -> None:
    """Deletes the endpoint (``id``, ``templateId``), then its template if the deployer made it
    (the name begins with ``prefix``)."""
    await client.delete_endpoint(endpoint["id"])
    template_id = endpoint.get("templateId")
    if not template_id:
        return
    try:
        name = (await client.template(template_id)).get("name") or ""
        if name.startswith(prefix):
            await client.delete_template(name)
    except GraphQLRequestError:
        pass  # gone already, or in use by another endpoint: nothing of ours to clean up


async def environment_details(
    client: ControlPlaneClient, app_name: str, environment_name: str
) -> dict[str, Any]:
    """The environment with its endpoints, each with its resource type and URL as recorded in
    the active build's manifest."""
    app = await client.app_by_name(app_name)
    env = await client.environment_by_name(app["id"], environment_name)
    manifest: dict[str, Any] = {}
    if env.get("activeBuildId"):
        manifest = (await client.build(env["activeBuildId"])).get("manifest") or {}
    resources = manifest.get("resources") or {}
    urls = manifest.get("resources_endpoints") or {}
    endpoints = []
    for endpoint in env.get("endpoints") or []:
        resource = resources.get(endpoint["name"]) or {}
        endpoints.append(
            {
                "resource": endpoint["name"],
                "id": endpoint["id"],
                "type": "lb" if resource.get("is_load_balanced") else "qb",
                "url": urls.get(endpoint["name"]),
            }
        )
    return {
        "app": app["name"],
        "id": env["id"],
        "name": env["name"],
        "state": env["state"],
        "activeBuildId": env.get("activeBuildId"),
        "endpoints": endpoints,
        "networkVolumes": [
            _volume(client, app["name"], env["name"], v) for v in env.get("networkVolumes") or []
        ],
    }


def _volume(
    client: ControlPlaneClient, app: str, environment: str, volume: dict[str, Any]
) -> dict[str, Any]:
    """A network volume of an environment; on the local platform, with where its data is."""
    out = {"id": volume["id"], "name": volume.get("name")}
    if client.target.platform == "local":
        from ..platform.volumes import host_dir
        from ..protocol.local import PlatformConfig

        path = host_dir(PlatformConfig.load(), app, environment, str(volume.get("name") or ""))
        out["localPath"] = str(path)
    return out


async def create_environment(
    client: ControlPlaneClient, app_name: str, environment_name: str
) -> tuple[dict[str, Any], bool]:
    """Creates the environment, and the app first if it does not exist; returns the environment
    and whether the app was created."""
    app = next((a for a in await client.list_apps() if a["name"] == app_name), None)
    created_app = app is None
    if app is None:
        app = await client.create_app(app_name)
    return await client.create_environment(app["id"], environment_name), created_app


async def remove_endpoints(
    client: ControlPlaneClient, app_name: str, environment: dict[str, Any]
) -> list[dict[str, Any]]:
    """Deletes the environment's endpoints (``environment`` as ``GET_ENVIRONMENT`` returns it)
    and their templates; returns them."""
    endpoints: list[dict[str, Any]] = environment.get("endpoints") or []
    prefix = template_prefix(app_name, environment["name"])
    for endpoint in endpoints:
        await delete_endpoint(client, endpoint, prefix)
    return endpoints


async def delete_environment(
    client: ControlPlaneClient, app_name: str, environment_id: str
) -> list[str]:
    """Deletes an environment and its endpoints; returns the endpoints' names."""
    environment = await client.environment(environment_id)
    removed = await remove_endpoints(client, app_name, environment)
    await client.delete_environment(environment_id)
    return [endpoint["name"] for endpoint in removed]


async def delete_app(client: ControlPlaneClient, app: dict[str, Any]) -> list[str]:
    """Deletes an app with its environments, endpoints and builds; returns what was removed as
    ``env/endpoint`` names."""
    removed = []
    for env in app.get("flashEnvironments") or []:
        names = await delete_environment(client, app["name"], env["id"])
        removed += [f"{env['name']}/{name}" for name in names]
    await client.delete_app(app["id"])
    return removed
