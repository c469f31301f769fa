"""The OpenAI-compatible surface: which service a body's `model` names, usage in streams.

`model` chooses the service: its name (`fake-chat`), `provider/name` (`acme/fake-chat`) or its id.
The provider's endpoint is called at the same path under its base URL (`<base>/v1/chat/completions`,
or `<base>/chat/completions` when the base URL already ends in `/v1`), with the body as sent except
for `model`, which becomes the service's name, and `stream_options.include_usage`, which the
gateway sets on streams so the provider reports usage in its last chunk.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import bad_request
from gateway.usage import usage_of

ROUTES = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def parse(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, 422 otherwise; it must name a model."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise bad_request("'model' is required: the service's name, provider/name or id", "/model")
    return data


def upstream_url(base_url: str, path: str) -> str:
    base = base_url.rstrip("/")
    return base + path[3:] if base.endswith("/v1") else base + path


def max_output_tokens(data: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def ask_for_usage(data: dict[str, Any]) -> bool:
    """Make a stream report usage; True when the client had not asked (its usage chunk is then dropped)."""
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


class SseScanner:
    """Splits a server-sent event stream into whole events and reads usage from them.

    Events are forwarded as soon as they are complete (a chunk holding the end of one event and
    the start of the next passes the first at once and keeps the rest until it ends). When the
    gateway asked for usage on the client's behalf, the usage-only event is not forwarded.
    """

    def __init__(self, drop_usage_event: bool) -> None:
        self.drop_usage_event = drop_usage_event
        self.pending = b""
        self.usage: tuple[int, int] | None = None

    def feed(self, chunk: bytes) -> bytes:
        """What of the stream so far can be forwarded now."""
        data = self.pending + chunk
        end = max(data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n"))
        if end < 0:
            self.pending = data
            return b""
        cut = end + (4 if data[end : end + 4] == b"\r\n\r\n" else 2)
        complete, self.pending = data[:cut], data[cut:]
        if b'"usage"' not in complete:
            return complete
        return self._scan(complete)

    def _scan(self, complete: bytes) -> bytes:
        kept: list[bytes] = []
        for event in complete.replace(b"\r\n", b"\n").split(b"\n\n"):
            if not event:
                continue
            payload = b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if b'"usage"' in payload:
                try:
                    data = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    data = None
                usage = usage_of(data)
                if usage is not None:
                    self.usage = usage
                    if self.drop_usage_event and isinstance(data, dict) and not data.get("choices"):
                        continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def rest(self) -> bytes:
        """Whatever the stream ended with that was not a complete event."""
        rest, self.pending = self.pending, b""
        return rest
