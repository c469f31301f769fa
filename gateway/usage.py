"""One usage record per call, as the gateway hands it off and the writer stores it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    occurred_at: float  # epoch seconds (UTC) when the call arrived; with request_id, the row's identity
    consumer_id: str
    key_id: str
    service_id: str
    service_version: str
    subscription_id: str | None
    route: str  # invoke, chat.completions, completions, embeddings
    status: int  # the HTTP status the consumer got
    latency_ms: float
    ttfb_ms: float | None  # time to the provider's first byte
    input_tokens: int
    output_tokens: int
    cost: Decimal
    currency: str
    stream: bool = False
    error: str | None = None  # our error code when the call failed

    def to_json(self) -> bytes:
        # orjson writes dataclasses itself (fast); the Decimal cost goes as its exact text
        return orjson.dumps(self, default=str)

    @classmethod
    def from_json(cls, raw: bytes | str) -> UsageRecord:
        data: dict[str, Any] = orjson.loads(raw)
        data["cost"] = Decimal(data["cost"])
        return cls(**data)


def usage_of(body: Any) -> tuple[int, int] | None:
    """(input, output) tokens from an OpenAI-style `usage` object (or the invoke answer's), if present."""
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    nested = usage.get("tokens")
    tokens: dict[str, Any] = nested if isinstance(nested, dict) else usage
    prompt = tokens.get("prompt_tokens", tokens.get("input_tokens", tokens.get("input", 0)))
    completion = tokens.get("completion_tokens", tokens.get("output_tokens", tokens.get("output", 0)))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return max(prompt, 0), max(completion, 0)
