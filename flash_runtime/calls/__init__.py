"""Calls between endpoints, and into a deployed app from outside it.

``client.py`` makes the calls, ``discovery.py`` finds the target's URL (control plane, TTL
cache), ``context.py`` says which manifest, control plane and environment a process resolves
in. ``REMOTE.md`` beside this file describes the rules.

The SDK imports ``client`` on a process's first call to another endpoint, never before: a worker
whose code calls no peer never loads this package's HTTP code nor asks the control plane
anything. This ``__init__`` therefore imports nothing.
"""
