"""Prefect flows: they orchestrate tasks and hold no business logic of their own."""

from core.telemetry import configure_from_settings

# Whatever process runs a flow imports this package first: with an OTLP endpoint configured, the
# spans Prefect records for flow and task runs (and ours inside them) are exported from here.
configure_from_settings("marketplace-worker")
