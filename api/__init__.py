"""The FastAPI service: starts publish runs and reports where they are."""
