"""Helpers for testing flash_runtime and apps built with it, all of them over real processes
and loopback sockets.

* :mod:`.net`: free ports, polling until something holds, small HTTP calls;
* :mod:`.workers`: a real ``python -m flash_runtime.bootstrap`` process from a built artifact;
* :mod:`.jobserver`: a strict loopback stand-in for Runpod's worker job API;
* :mod:`.platform`: the local platform in-process, on its own thread;
* :mod:`.official`: an emulation of Runpod's official Flash image contract.

The project's tests and benchmarks use these; nothing in a worker or the CLI imports them.
"""
