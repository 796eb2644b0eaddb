"""Deployment helpers for specwave (prefect.yaml, work pools, Dockerfile)."""
