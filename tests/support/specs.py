"""Valid service specs for tests that don't call a provider endpoint."""

from __future__ import annotations

import copy
from typing import Any

BASE_SPEC: dict[str, Any] = {
    "name": "acme-chat",
    "version": "1.0.0",
    "description": "Acme's general purpose chat model",
    "provider": {"id": "acme", "name": "Acme AI"},
    "category": "chat",
    "tags": ["chat", "english"],
    "capabilities": [{"name": "chat-completion"}],
    "endpoint": {"url": "https://api.acme.example/v1", "healthPath": "/health", "authentication": {"type": "bearer"}},
    "pricing": {
        "model": "per-token",
        "currency": "USD",
        "rates": [
            {"unit": "input_tokens", "price": 0.5, "per": 1000},
            {"unit": "output_tokens", "price": 1.5, "per": 1000},
        ],
        "plans": [
            {"name": "starter", "requestsPerMinute": 60, "tokensPerMonth": 1_000_000, "default": True},
            {
                "name": "pro",
                "description": "For production traffic",
                "requestsPerMinute": 600,
                "keyRequestsPerMinute": 300,
                "requestsPerMonth": 1_000_000,
                "tokensPerMonth": 50_000_000,
                "maxTokensPerRequest": 4096,
                "pricePerMonth": 49,
            },
        ],
    },
    "sla": {"availability": 99.9, "maxLatencyMs": 2000, "supportLevel": "standard"},
    "compliance": {"level": "public", "dataResidency": ["US"], "certifications": ["SOC2"]},
}


def make_spec(**overrides: Any) -> dict[str, Any]:
    """A deep copy of the base spec with top-level fields replaced."""
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(overrides)
    return spec
