"""What every side of the project shares on the wire, importable by a worker.

``target`` (a control plane's address, key and URL conventions), ``operations`` (every GraphQL
document the project sends) and ``controlplane`` (the client that sends them). Nothing here
imports ``pack``, ``deploy``, ``platform``, ``devserver`` or the CLI: workers that call other
endpoints use this package, and the deployer and the dev server build on it.
"""
