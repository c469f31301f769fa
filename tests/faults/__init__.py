"""Tests that inject real faults (database, Redis, registry, Prefect) and check that nothing is lost."""
