"""Consumer accounts (admin manages them; a consumer reads its own) and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api import access
from api.auth import Principal, Role, require_roles
from api.consumers import account, create_key, key_out, rotate_key
from api.consumption_schemas import (
    BlockIn,
    ConsumerIn,
    ConsumerOut,
    ConsumerPage,
    KeyCreated,
    KeyIn,
    KeyOut,
    KeyPage,
    KeyRotated,
    RotationIn,
)
from api.deps import DbSession, Offset, SettingsDep
from api.errors import ErrorResponse
from storage.database import session_scope
from storage.repositories import api_keys, consumers

router = APIRouter(tags=["consumers"])
Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
ConsumerOrAdmin = Annotated[Principal, Depends(require_roles(Role.CONSUMER, Role.ADMIN))]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422)}
ConsumerPath = Annotated[str, Path(max_length=128, description="Consumer id, or `me` for the caller's own account.")]
NO_STORE = {"Cache-Control": "no-store"}  # a secret shown once: no cache, no idempotency replay may keep it


@router.post("/consumers", status_code=201, response_model=ConsumerOut, responses=ERRORS, summary="Create a consumer")
def create_consumer(body: ConsumerIn, request: Request, principal: Admin) -> ConsumerOut:
    """Open a consumer account ahead of its first use (admin)."""
    with session_scope() as session:
        consumer = consumers.create(session, body.id, body.name, body.email, access.actor_for(principal, request))
        return ConsumerOut.model_validate(consumer)


@router.get("/consumers", response_model=ConsumerPage, responses=ERRORS, summary="List consumers")
def list_consumers(
    session: DbSession,
    _principal: Admin,
    status: Annotated[str | None, Query(pattern="^(active|blocked)$")] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ConsumerPage:
    """Consumer accounts, newest first (admin)."""
    rows, total = consumers.list_consumers(session, status, offset, limit)
    return ConsumerPage(items=[ConsumerOut.model_validate(c) for c in rows], total=total, offset=offset, limit=limit)


@router.get("/consumers/{consumer_id}", response_model=ConsumerOut, responses=ERRORS, summary="Read a consumer")
def read_consumer(consumer_id: ConsumerPath, request: Request, principal: ConsumerOrAdmin) -> ConsumerOut:
    """A consumer's account (`me`: the caller's own, created on first use)."""
    with session_scope() as session:
        return ConsumerOut.model_validate(
            account(session, principal, consumer_id, access.actor_for(principal, request))
        )


@router.post("/consumers/{consumer_id}/block", response_model=ConsumerOut, responses=ERRORS, summary="Block a consumer")
def block_consumer(consumer_id: ConsumerPath, body: BlockIn, request: Request, principal: Admin) -> ConsumerOut:
    """Every key of the consumer stops working at every gateway within a second (admin)."""
    with session_scope() as session:
        consumer = consumers.block(session, consumer_id, body.reason, access.actor_for(principal, request))
        return ConsumerOut.model_validate(consumer)


@router.delete("/consumers/{consumer_id}/block", response_model=ConsumerOut, responses=ERRORS, summary="Unblock")
def unblock_consumer(
    consumer_id: ConsumerPath,
    request: Request,
    principal: Admin,
    reason: Annotated[str | None, Query(max_length=2000, description="Why (audited).")] = None,
) -> ConsumerOut:
    """Lift a block: the consumer's live keys work again (admin)."""
    with session_scope() as session:
        consumer = consumers.unblock(session, consumer_id, reason, access.actor_for(principal, request))
        return ConsumerOut.model_validate(consumer)


@router.post(
    "/consumers/{consumer_id}/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=ERRORS,
    summary="Create a key",
)
def create(
    consumer_id: ConsumerPath,
    body: KeyIn,
    request: Request,
    response: Response,
    settings: SettingsDep,
    principal: ConsumerOrAdmin,
) -> KeyCreated:
    """Issue an API key; `secret` is in this answer only (store it now: only its hash is kept)."""
    response.headers.update(NO_STORE)
    with session_scope() as session:
        return create_key(session, settings, principal, consumer_id, body, access.actor_for(principal, request))


@router.get("/consumers/{consumer_id}/keys", response_model=KeyPage, responses=ERRORS, summary="List keys")
def list_keys(
    consumer_id: ConsumerPath,
    request: Request,
    principal: ConsumerOrAdmin,
    include_ended: Annotated[bool, Query(alias="includeEnded", description="Also revoked and expired keys.")] = False,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> KeyPage:
    """The consumer's keys, newest first, never with their secrets."""
    now = datetime.now(UTC)
    with session_scope() as session:
        consumer = account(session, principal, consumer_id, access.actor_for(principal, request))
        rows, total = api_keys.list_for(session, consumer.id, include_ended, now, offset, limit)
        return KeyPage(items=[key_out(k, now) for k in rows], total=total, offset=offset, limit=limit)


@router.get("/consumers/{consumer_id}/keys/{key_id}", response_model=KeyOut, responses=ERRORS, summary="Read a key")
def read_key(consumer_id: ConsumerPath, key_id: str, request: Request, principal: ConsumerOrAdmin) -> KeyOut:
    """One key, without its secret."""
    with session_scope() as session:
        consumer = account(session, principal, consumer_id, access.actor_for(principal, request))
        return key_out(api_keys.get(session, consumer.id, key_id), datetime.now(UTC))


@router.delete(
    "/consumers/{consumer_id}/keys/{key_id}", response_model=KeyOut, responses=ERRORS, summary="Revoke a key"
)
def revoke_key(
    consumer_id: ConsumerPath,
    key_id: str,
    request: Request,
    principal: ConsumerOrAdmin,
    reason: Annotated[str | None, Query(max_length=2000, description="Why (audited).")] = None,
) -> KeyOut:
    """Refuse the key from now on, at every gateway within a second."""
    actor = access.actor_for(principal, request)
    with session_scope() as session:
        consumer = account(session, principal, consumer_id, actor)
        return key_out(api_keys.revoke(session, consumer.id, key_id, reason, actor), datetime.now(UTC))


@router.post(
    "/consumers/{consumer_id}/keys/{key_id}/rotation",
    status_code=201,
    response_model=KeyRotated,
    responses=ERRORS,
    summary="Rotate a key",
)
def rotate(
    consumer_id: ConsumerPath,
    key_id: str,
    body: RotationIn,
    request: Request,
    response: Response,
    settings: SettingsDep,
    principal: ConsumerOrAdmin,
) -> KeyRotated:
    """A new key (its `secret` shown once) replacing this one, which keeps working `graceSeconds` longer."""
    response.headers.update(NO_STORE)
    actor = access.actor_for(principal, request)
    with session_scope() as session:
        return rotate_key(session, settings, principal, consumer_id, key_id, body.grace_seconds, actor)
