"""The app is handed its settings once (create_app) and its routes receive them as dependencies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import LimitSettings, Settings, get_settings


def test_an_app_uses_the_settings_it_was_created_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETPLACE_LIMITS__MAX_BODY_BYTES", str(1024 * 1024))
    get_settings.cache_clear()
    try:
        given = Settings(limits=LimitSettings(max_body_bytes=1024))
        app = create_app(given)
        from_environment = create_app()
    finally:
        get_settings.cache_clear()
    assert app.state.settings is given
    assert from_environment.state.settings.limits.max_body_bytes == 1024 * 1024
    body = b'{"query": "' + b"x" * 2000 + b'"}'
    headers = {"content-type": "application/json"}
    # The search route reads the body limit from its settings dependency: the app's, not the environment's.
    answer = TestClient(app).post("/api/v1/services/search", content=body, headers=headers)
    assert answer.status_code == 413, answer.text
