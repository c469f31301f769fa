"""The in-process API app in tests that change the environment while it runs."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from core.settings import get_settings
from storage.database import reset_engine


def reconfigure(client: TestClient) -> None:
    """Read the environment again: storage forgets its engine and settings, and the running app takes
    the new settings (an app otherwise keeps those it was created with, api/app.py)."""
    reset_engine()
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.settings = get_settings()
