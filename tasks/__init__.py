"""Prefect tasks, one module per publishing phase."""
