"""The gateway's endpoints: the marketplace's invoke call and the OpenAI-compatible pass-through."""

from __future__ import annotations

import time

import orjson

from gateway import openai_compat, proxy
from gateway.asgi import Receive, Scope, Send, send_whole
from gateway.checks import callable_service
from gateway.errors import GatewayError
from gateway.openai_compat import SseScanner
from gateway.proxy import Call, Gateway


async def invoke(gw: Gateway, scope: Scope, receive: Receive, send: Send, service_id: str) -> Call:
    """POST /api/v1/services/{id}/invoke: the body goes to the service's endpoint as it is."""
    call = Call(route_name="invoke", caller_request_id=proxy.caller_request_id(scope))
    try:
        await proxy.authenticate(gw, call, scope)
        body = await proxy.read_request(gw, receive)
        call.service = callable_service(gw.directory.service(service_id), service_id)
        max_tokens = _invoke_max_tokens(body)
        await proxy.authorize(gw, call, len(body), max_tokens)
        await proxy.forward(gw, call, call.service.base_url, body, send, None)
    except GatewayError as exc:
        await proxy.fail(gw, call, send, exc)
    return call


def _invoke_max_tokens(body: bytes) -> int | None:
    """`parameters.max_tokens` of an invoke body, when it says."""
    if b"max_tokens" not in body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    params = data.get("parameters") if isinstance(data, dict) else None
    value = params.get("max_tokens") if isinstance(params, dict) else None
    return value if isinstance(value, int) and value >= 0 else None


async def openai(gw: Gateway, scope: Scope, receive: Receive, send: Send, path: str) -> Call:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings: the service is the body's `model`."""
    call = Call(route_name=openai_compat.ROUTES[path], caller_request_id=proxy.caller_request_id(scope))
    try:
        await proxy.authenticate(gw, call, scope)
        body = await proxy.read_request(gw, receive)
        data = openai_compat.parse(body)
        call.service = callable_service(gw.directory.model(data["model"]), data["model"])
        await proxy.authorize(gw, call, len(body), openai_compat.max_output_tokens(data))
        sse = None
        if data.get("stream") is True:
            sse = SseScanner(drop_usage_event=openai_compat.ask_for_usage(data))
        if data["model"] != call.service.name or sse is not None:
            data["model"] = call.service.name
            body = orjson.dumps(data)
        url = openai_compat.upstream_url(call.service.base_url, path)
        await proxy.forward(gw, call, url, body, send, sse)
    except GatewayError as exc:
        await proxy.fail(gw, call, send, exc)
    return call


async def models(gw: Gateway, scope: Scope, send: Send) -> Call:
    """GET /v1/models: the services this key may call, as OpenAI lists models."""
    call = Call(route_name="models", caller_request_id=proxy.caller_request_id(scope))
    try:
        key = await proxy.authenticate(gw, call, scope)
    except GatewayError as exc:
        await proxy.fail(gw, call, send, exc)
        return call
    data = []
    for service_id in sorted(await gw.directory.subscribed(key)):
        route = gw.directory.service(service_id)
        if route is None or route.status not in ("active", "deprecated") or not key.may_call(service_id):
            continue
        created = int(route.published_at.timestamp()) if route.published_at else int(time.time())
        data.append({"id": route.name, "object": "model", "created": created, "owned_by": route.provider_id})
    body = orjson.dumps({"object": "list", "data": data})
    call.status = 200
    await send_whole(send, 200, body, call.headers())
    return call
