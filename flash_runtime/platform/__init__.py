"""The local platform: Runpod's control plane, serverless API and worker protocol on this machine."""
