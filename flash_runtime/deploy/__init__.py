"""Deploying Flash apps: the control-plane client, the deployer and their commands.

One deployer for both platforms: it speaks only Runpod's GraphQL API (``operations.py``) through
``client.ControlPlaneClient``, whether the control plane is Runpod's or the local platform's.
"""
