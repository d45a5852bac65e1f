"""Benchmarks against the reference implementation: ``python -m bench [--quick]``."""
