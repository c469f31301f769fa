"""Prefect flows: they orchestrate tasks and hold no business logic of their own."""
