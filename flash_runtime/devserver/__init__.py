"""``flash run``: the development server.

It fronts every endpoint of the app on one local address while the project is edited:

* :mod:`.session`: the session: build, release to the ``live`` environment (``live-`` names)
  through the deployer, serve, rebuild on changes, delete the live endpoints on Ctrl-C;
* :mod:`.app`: the Starlette app: the proxy to the endpoints, ``/``, ``/ping``, ``/docs``,
  ``/openapi.json``;
* :mod:`.openapi` and :mod:`._schemas`: the OpenAPI 3.1 document, from schemas computed in a
  child interpreter;
* :mod:`.watch`: the file watcher; :mod:`.logs`: worker output in the terminal;
* ``docs_ui/``: Swagger UI's files, served locally.

Nothing here runs in a worker; the workers' side of request-tagged output is
``flash_runtime.worker.request_context``.
"""
