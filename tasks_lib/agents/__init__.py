"""Agent kinds that specwave can launch (one module per kind)."""
