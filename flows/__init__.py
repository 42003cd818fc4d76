"""Prefect wrappers around ``pipeline/``: the batch and nightly flows, their deployments and
serving. Nothing here does work of its own; importing this package does not import Prefect."""
