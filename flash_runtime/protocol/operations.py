"""Every GraphQL document flash_runtime sends, in one place.

Operation names, variables and selected fields are those of Runpod's Flash API, so each document
runs unchanged against ``https://api.runpod.io/graphql`` and against the local platform's control
plane (``flash_runtime/platform/schema.graphql``). ``tests/protocol/test_deploy_operations.py`` validates
every document here against both that schema and ``tests/runpod_schema.graphql``.

This module is plain strings and imports nothing, so workers can use it for discovery cheaply.
"""

from __future__ import annotations

_ENVIRONMENT_SUMMARY = "id name state activeBuildId createdAt"

LIST_APPS = f"""
query getFlashApps {{
  myself {{
    flashApps {{
      id
      name
      flashEnvironments {{ {_ENVIRONMENT_SUMMARY} }}
      flashBuilds {{ id createdAt }}
    }}
  }}
}}
"""

GET_APP_BY_NAME = f"""
query getFlashAppByName($flashAppName: String!) {{
  flashAppByName(flashAppName: $flashAppName) {{
    id
    name
    flashEnvironments {{ {_ENVIRONMENT_SUMMARY} }}
    flashBuilds {{ id objectKey createdAt }}
  }}
}}
"""

CREATE_APP = """
mutation createFlashApp($input: CreateFlashAppInput!) {
  createFlashApp(input: $input) { id name }
}
"""

DELETE_APP = """
mutation deleteFlashApp($flashAppId: String!) {
  deleteFlashApp(flashAppId: $flashAppId)
}
"""

CREATE_ENVIRONMENT = """
mutation createFlashEnvironment($input: CreateFlashEnvironmentInput!) {
  createFlashEnvironment(input: $input) { id name }
}
"""

GET_ENVIRONMENT = """
query getFlashEnvironment($flashEnvironmentId: String!) {
  flashEnvironment(flashEnvironmentId: $flashEnvironmentId) {
    id
    name
    state
    activeBuildId
    createdAt
    endpoints { id name templateId }
    networkVolumes { id name }
  }
}
"""

GET_ENVIRONMENT_BY_NAME = """
query getFlashEnvironmentByName($input: FlashEnvironmentByNameInput!) {
  flashEnvironmentByName(input: $input) {
    id
    name
    state
    activeBuildId
    endpoints { id name templateId }
    networkVolumes { id name }
  }
}
"""

DELETE_ENVIRONMENT = """
mutation deleteFlashEnvironment($flashEnvironmentId: String!) {
  deleteFlashEnvironment(flashEnvironmentId: $flashEnvironmentId)
}
"""

PREPARE_ARTIFACT_UPLOAD = """
mutation PrepareArtifactUpload($input: PrepareFlashArtifactUploadInput!) {
  prepareFlashArtifactUpload(input: $input) { uploadUrl objectKey expiresAt }
}
"""

FINALIZE_ARTIFACT_UPLOAD = """
mutation FinalizeArtifactUpload($input: FinalizeFlashArtifactUploadInput!) {
  finalizeFlashArtifactUpload(input: $input) { id manifest }
}
"""

DEPLOY_BUILD_TO_ENVIRONMENT = """
mutation deployBuildToEnvironment($input: DeployBuildToEnvironmentInput!) {
  deployBuildToEnvironment(input: $input) { id name }
}
"""

GET_BUILD = """
query getFlashBuild($input: String!) {
  flashBuild(flashBuildId: $input) { id manifest }
}
"""

UPDATE_BUILD_MANIFEST = """
mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) {
  updateFlashBuildManifest(input: $input) { id manifest }
}
"""

SAVE_ENDPOINT = """
mutation saveEndpoint($input: EndpointInput!) {
  saveEndpoint(input: $input) {
    id
    name
    type
    templateId
    flashEnvironmentId
    gpuIds
    instanceIds
    gpuCount
    workersMin
    workersMax
    idleTimeout
    scalerType
    scalerValue
    executionTimeoutMs
    version
  }
}
"""

DELETE_ENDPOINT = """
mutation deleteEndpoint($id: String!) {
  deleteEndpoint(id: $id)
}
"""

# Templates: an endpoint's image and env. Updating an endpoint's template in place (rather than
# sending a new inline template, whose name would already be taken) is what makes Runpod roll
# its workers.

_TEMPLATE_FIELDS = "id name imageName containerDiskInGb dockerArgs env { key value }"

GET_TEMPLATE = f"""
query getTemplate($id: String!) {{
  podTemplate(id: $id) {{ {_TEMPLATE_FIELDS} }}
}}
"""

SAVE_TEMPLATE = f"""
mutation saveTemplate($input: SaveTemplateInput) {{
  saveTemplate(input: $input) {{ {_TEMPLATE_FIELDS} }}
}}
"""

DELETE_TEMPLATE = """
mutation deleteTemplate($templateName: String) {
  deleteTemplate(templateName: $templateName)
}
"""

# Discovery: how a worker (by environment id) or a script (by app and environment name) finds
# the environment's active build, whose manifest maps each resource to its URL
# (``resources_endpoints``; the build itself is read with GET_BUILD). Lean selections, and
# operation names of their own, so a control plane's request log tells them from a deploy's.

DISCOVER_ENVIRONMENT = """
query discoverFlashEnvironment($flashEnvironmentId: String!) {
  flashEnvironment(flashEnvironmentId: $flashEnvironmentId) { id name activeBuildId }
}
"""

DISCOVER_APP = """
query discoverFlashApp($flashAppName: String!) {
  flashAppByName(flashAppName: $flashAppName) {
    id
    flashEnvironments { id name activeBuildId }
  }
}
"""

ALL: dict[str, str] = {
    name: value
    for name, value in dict(globals()).items()
    if name.isupper() and not name.startswith("_") and name != "ALL"
}
"""Every document by its constant name (what the contract test iterates over)."""
