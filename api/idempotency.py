"""`Idempotency-Key` on POST: a retried request gets the first one's response, never a second publication.

The key is scoped to the caller (the token's role and subject) and bound to the request: the same
key with a different method, path or body is refused (422), and a key whose first request is
still running is refused (409) rather than run twice. Responses below 500 are kept for
`idempotency.ttl_seconds` and replayed with `Idempotent-Replayed: true`; a 5xx releases the key so
the client's retry runs again, and so does a response that shows a secret once (`Cache-Control:
no-store`): secrets are never written to the idempotency store. Requests without a valid bearer
token pass through untouched (the route answers 401 where a token is required).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import decode_token
from api.errors import error_response
from core.errors import DomainError
from core.settings import IdempotencySettings, Settings
from storage.database import session_scope
from storage.repositories import idempotency
from storage.repositories.idempotency import Claim, StoredResponse

log = logging.getLogger("marketplace.api.idempotency")

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the IETF draft's examples
KEPT_HEADERS = ("content-type", "location", "deprecation", "sunset")
MAX_STORED_BODY = 1024 * 1024


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        settings: Settings = scope["app"].state.settings  # the app's (api/app.py), read per request
        key = headers.get("idempotency-key")
        principal = _principal_key(headers.get("authorization"), settings) if key is not None else None
        if key is None or principal is None:
            await self.app(scope, receive, send)
            return
        if not KEY_PATTERN.match(key):
            detail = {"pointer": "Idempotency-Key", "message": "1 to 255 visible ASCII characters"}
            await error_response(400, "bad_idempotency_key", "the Idempotency-Key header is malformed", [detail])(
                scope, receive, send
            )
            return
        limit = settings.limits.max_body_bytes
        body, messages, complete = await _buffer(receive, limit)
        replay = _replaying(messages, receive)
        if not complete:  # over the size limit: the route refuses it with 413, nothing to remember
            await self.app(scope, replay, send)
            return
        fingerprint = _fingerprint(scope, body)
        try:
            claim = await run_in_threadpool(_claim, principal, key, fingerprint, settings.idempotency)
        except SQLAlchemyError:
            log.exception("idempotency key store unavailable")
            await error_response(503, "upstream_unavailable", "cannot check the Idempotency-Key now; retry later")(
                scope, receive, send
            )
            return
        if claim.outcome != "run":
            await _answer_claim(claim, scope, receive, send)
            return
        await self._run_and_keep(scope, replay, send, principal, key)

    async def _run_and_keep(self, scope: Scope, receive: Receive, send: Send, principal: str, key: str) -> None:
        captured: dict[str, Any] = {"status": 500, "headers": [], "body": bytearray(), "too_big": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                if len(captured["body"]) + len(message.get("body", b"")) > MAX_STORED_BODY:
                    captured["too_big"] = True
                else:
                    captured["body"].extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await run_in_threadpool(_release, principal, key)
            raise
        status = int(captured["status"])
        if status >= 500 or captured["too_big"] or _not_storable(captured["headers"]):
            await run_in_threadpool(_release, principal, key)
            return
        kept = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in captured["headers"]
            if name.decode("latin-1").lower() in KEPT_HEADERS
        }
        stored = StoredResponse(status, kept, bytes(captured["body"]).decode("utf-8", errors="replace"))
        await run_in_threadpool(_complete, principal, key, stored)


def _not_storable(headers: list[tuple[bytes, bytes]]) -> bool:
    """A response marked `Cache-Control: no-store` carries a secret shown once (an API key, a signing
    secret): it is not kept in the database, and a retry with the same key runs again."""
    return any(name.lower() == b"cache-control" and b"no-store" in value.lower() for name, value in headers)


def _principal_key(authorization: str | None, settings: Settings) -> str | None:
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    try:
        principal = decode_token(authorization[7:].strip(), settings.auth)
    except DomainError:
        return None  # the route reports the bad token
    return f"{principal.role.value}:{principal.subject}"


async def _buffer(receive: Receive, limit: int) -> tuple[bytes, list[Message], bool]:
    """Read the body (up to `limit`); returns it, the messages read, and whether it was all read."""
    messages: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return bytes(body), messages, False
        body.extend(message.get("body", b""))
        if len(body) > limit:
            return bytes(body), messages, False
        if not message.get("more_body", False):
            return bytes(body), messages, True


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel that gives the buffered messages again, then the rest of the stream."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _fingerprint(scope: Scope, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1")):
        digest.update(part.encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


async def _answer_claim(claim: Claim, scope: Scope, receive: Receive, send: Send) -> None:
    if claim.outcome == "replay" and claim.stored is not None:
        stored = claim.stored
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers.items()]
        headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": stored.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body.encode("utf-8")})
        return
    detail = {"pointer": "Idempotency-Key", "message": "use a new key for a different request"}
    responses: dict[str, Callable[[], Any]] = {
        "mismatch": lambda: error_response(
            422, "idempotency_key_reused", "this Idempotency-Key was used for a different request", [detail]
        ),
        "in_flight": lambda: error_response(
            409, "idempotency_key_in_use", "a request with this Idempotency-Key is still being processed; retry"
        ),
    }
    response: Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]] = responses[claim.outcome]()
    await response(scope, receive, send)


def _ttls(config: IdempotencySettings) -> tuple[timedelta, timedelta]:
    return timedelta(seconds=config.ttl_seconds), timedelta(seconds=config.in_flight_seconds)


def _claim(principal: str, key: str, fingerprint: str, config: IdempotencySettings) -> Claim:
    ttl, in_flight = _ttls(config)
    with session_scope() as session:
        idempotency.purge_expired(session, batch=100)  # keeps the table small without a scheduled job
        return idempotency.claim(session, principal, key, fingerprint, ttl, in_flight)


def _complete(principal: str, key: str, stored: StoredResponse) -> None:
    with session_scope() as session:
        idempotency.complete(session, principal, key, stored)


def _release(principal: str, key: str) -> None:
    with session_scope() as session:
        idempotency.release(session, principal, key)
