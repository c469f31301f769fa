"""The official `openai` client works against the gateway by changing base URL and key."""

from __future__ import annotations

import openai
import pytest

from core.plans import Plan
from tests.gateway.conftest import Setup
from tests.gateway.test_proxy import rows


def client(base_url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0, timeout=10)


def test_plain_streaming_embeddings_and_models(setup: Setup) -> None:
    with setup.gateway() as gw:
        c = client(gw.url, setup.token)
        completion = c.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
        stream = c.chat.completions.create(
            model="acme/fake-chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
        with_usage = c.chat.completions.create(
            model="fake-chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in with_usage if chunk.usage is not None]
        embedding = c.embeddings.create(model="fake-chat", input="hello")
        models = c.models.list()
    assert completion.choices[0].message.content == "Hello there!"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 12
    assert "".join(pieces) == "Hello there!"
    assert len(usage) == 1  # asked for by the client: passed through
    assert usage[0].completion_tokens == 7
    assert embedding.data[0].embedding == [0.1, 0.2, 0.3]
    assert [m.id for m in models.data] == ["fake-chat"]
    recorded = rows(setup, 4)
    assert [(r.route, r.stream, r.output_tokens) for r in recorded] == [
        ("chat.completions", False, 7),
        ("chat.completions", True, 7),
        ("chat.completions", True, 7),
        ("embeddings", False, 0),
    ]


def test_errors_reach_the_client_with_their_message(setup: Setup) -> None:
    setup.new_consumer("consumer-2", Plan(name="tiny", requests_per_minute=1))
    with setup.gateway() as gw:
        c = client(gw.url, setup.token)
        c.chat.completions.create(model="fake-chat", messages=[])
        with pytest.raises(openai.RateLimitError) as limited:
            c.chat.completions.create(model="fake-chat", messages=[])
        with pytest.raises(openai.NotFoundError) as unknown:
            c.chat.completions.create(model="no-such-model", messages=[])
        with pytest.raises(openai.AuthenticationError) as bad_key:
            client(gw.url, "mk_live_0000000000000000_" + "x" * 43).chat.completions.create(
                model="fake-chat", messages=[]
            )
    assert "rate limit of 1 requests per minute" in str(limited.value)
    assert "no-such-model" in str(unknown.value)
    assert "not valid" in str(bad_key.value)
