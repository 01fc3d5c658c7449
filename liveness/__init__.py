"""Shared core of the liveness pipeline: config, stream contract, Redis, face pipeline, CLI."""

__version__ = "0.1.0"
