"""specwave flows: Prefect flow entrypoints and the CLI."""
