"""Access to services: plans, a consumer's subscriptions, a service's subscribers, access requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api import access as access_rules
from api import subscriptions
from api.auth import AnyRole, MaybePrincipal, Principal, Role, require_roles
from api.consumers import account
from api.consumption_schemas import (
    AccessDecisionAccepted,
    AccessDecisionIn,
    AccessRequestOut,
    AccessRequestPage,
    PlanChangeIn,
    PlansOut,
    SubscribeIn,
    SubscriptionOut,
    SubscriptionPage,
)
from api.deps import DbSession, Offset, OrchestratorDep, SettingsDep
from api.errors import ErrorResponse
from core.errors import NotFoundError
from storage.database import session_scope
from storage.repositories import access_requests, service_subscriptions, services

router = APIRouter(tags=["access"])
ConsumerOrAdmin = Annotated[Principal, Depends(require_roles(Role.CONSUMER, Role.ADMIN))]
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 422, 503)}
ConsumerPath = Annotated[str, Path(max_length=128, description="Consumer id, or `me` for the caller's own account.")]
STATUS = Annotated[str | None, Query(pattern="^(pending|active|rejected|expired|cancelled)$")]
Limit = Annotated[int, Query(ge=1, le=100)]


@router.get("/services/{service_id}/plans", response_model=PlansOut, responses=ERRORS, summary="A service's plans")
def read_plans(service_id: str, session: DbSession, settings: SettingsDep, principal: MaybePrincipal) -> PlansOut:
    """The plans a consumer may subscribe under, and whether access needs approval."""
    service = services.get(session, service_id)
    access_rules.require_readable(principal, service_id, service.provider_id, service.status)
    return subscriptions.plans_view(service, settings)


@router.post(
    "/consumers/{consumer_id}/subscriptions",
    status_code=201,
    response_model=SubscriptionOut,
    responses={**ERRORS, 202: {"model": SubscriptionOut, "description": "Waiting for approval"}},
    summary="Subscribe to a service",
)
def subscribe(
    consumer_id: ConsumerPath,
    body: SubscribeIn,
    request: Request,
    response: Response,
    settings: SettingsDep,
    orch: OrchestratorDep,
    principal: ConsumerOrAdmin,
) -> SubscriptionOut:
    """`201` and `active` at once, or `202` and `pending` with the access request an approve-access run waits on."""
    actor = access_rules.actor_for(principal, request)
    subscription, pending = subscriptions.subscribe(settings, principal, consumer_id, body, actor)
    if pending is not None:
        response.status_code = 202
    return _one(subscription.id, orch)


def _one(subscription_id: str, orch: OrchestratorDep) -> SubscriptionOut:
    with session_scope() as session:
        subscription = service_subscriptions.get_subscription(session, subscription_id)
        return subscriptions.subscription_view(
            session, subscription, services.get(session, subscription.service_id), orch
        )


@router.get(
    "/consumers/{consumer_id}/subscriptions", response_model=SubscriptionPage, responses=ERRORS, summary="Subscriptions"
)
def list_subscriptions(
    consumer_id: ConsumerPath,
    request: Request,
    orch: OrchestratorDep,
    principal: ConsumerOrAdmin,
    status: STATUS = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> SubscriptionPage:
    """The consumer's subscriptions, newest first."""
    with session_scope() as session:
        consumer = account(session, principal, consumer_id, access_rules.actor_for(principal, request))
        filters = service_subscriptions.SubscriptionFilter(consumer_id=consumer.id, status=status)
        rows, total = service_subscriptions.list_subscriptions(session, filters, offset, limit)
        items = [subscriptions.subscription_view(session, s, service, orch) for s, service in rows]
        return SubscriptionPage(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/consumers/{consumer_id}/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    responses=ERRORS,
    summary="Read a subscription",
)
def read_subscription(
    consumer_id: ConsumerPath, subscription_id: str, request: Request, orch: OrchestratorDep, principal: ConsumerOrAdmin
) -> SubscriptionOut:
    """One subscription with its access request, if it needed one."""
    actor = access_rules.actor_for(principal, request)
    with session_scope() as session:
        subscriptions.own_subscription(session, principal, consumer_id, subscription_id, actor)
    return _one(subscription_id, orch)


@router.patch(
    "/consumers/{consumer_id}/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    responses=ERRORS,
    summary="Change plan",
)
def change_plan(
    consumer_id: ConsumerPath,
    subscription_id: str,
    body: PlanChangeIn,
    request: Request,
    settings: SettingsDep,
    orch: OrchestratorDep,
    principal: ConsumerOrAdmin,
) -> SubscriptionOut:
    """Move the subscription to another plan of the service; the new limits apply at every gateway."""
    actor = access_rules.actor_for(principal, request)
    subscriptions.change_plan(settings, principal, consumer_id, subscription_id, body.plan, actor)
    return _one(subscription_id, orch)


@router.delete(
    "/consumers/{consumer_id}/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    responses=ERRORS,
    summary="Cancel a subscription",
)
def cancel(
    consumer_id: ConsumerPath,
    subscription_id: str,
    request: Request,
    orch: OrchestratorDep,
    principal: ConsumerOrAdmin,
    reason: Annotated[str | None, Query(max_length=2000)] = None,
) -> SubscriptionOut:
    """End the subscription (and a pending one's approval run); calls stop at every gateway within a second."""
    actor = access_rules.actor_for(principal, request)
    subscriptions.cancel(orch, principal, consumer_id, subscription_id, reason, actor)
    return _one(subscription_id, orch)


@router.get(
    "/services/{service_id}/subscribers", response_model=SubscriptionPage, responses=ERRORS, summary="Subscribers"
)
def list_subscribers(
    service_id: str,
    session: DbSession,
    orch: OrchestratorDep,
    principal: AnyRole,
    status: STATUS = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> SubscriptionPage:
    """Who has (or asked for) access to the service: its provider, governance and admin."""
    service = services.get(session, service_id)
    access_rules.require_internals(principal, service_id, service.provider_id, service.status)
    filters = service_subscriptions.SubscriptionFilter(service_id=service_id, status=status)
    rows, total = service_subscriptions.list_subscriptions(session, filters, offset, limit)
    items = [subscriptions.subscription_view(session, s, svc, orch) for s, svc in rows]
    return SubscriptionPage(items=items, total=total, offset=offset, limit=limit)


@router.get("/access-requests", response_model=AccessRequestPage, responses=ERRORS, summary="Access requests")
def list_access_requests(
    session: DbSession,
    orch: OrchestratorDep,
    principal: AnyRole,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected|expired|cancelled)$")] = "pending",
    service_id: Annotated[str | None, Query(alias="serviceId", max_length=36)] = None,
    offset: Offset = 0,
    limit: Limit = 20,
) -> AccessRequestPage:
    """Oldest first: a provider sees its services' requests, a consumer its own, governance and admin all."""
    filters = subscriptions.requests_filter(principal, status, service_id)
    rows, total = access_requests.list_requests(session, filters, offset, limit)
    items = [subscriptions.request_view(session, r, orch) for r in rows]
    return AccessRequestPage(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/access-requests/{request_id}", response_model=AccessRequestOut, responses=ERRORS, summary="Read an access request"
)
def read_access_request(
    request_id: str, session: DbSession, orch: OrchestratorDep, principal: AnyRole
) -> AccessRequestOut:
    """One access request with its approve-access run."""
    request = access_requests.get_request(session, request_id)
    if not subscriptions.may_see_request(principal, request):
        raise NotFoundError(f"access request {request_id} not found")
    return subscriptions.request_view(session, request, orch)


@router.post(
    "/access-requests/{request_id}/decision",
    status_code=202,
    response_model=AccessDecisionAccepted,
    responses=ERRORS,
    summary="Approve or reject access",
)
def decide(
    request_id: str, body: AccessDecisionIn, request: Request, orch: OrchestratorDep, principal: AnyRole
) -> AccessDecisionAccepted:
    """Resume the waiting approve-access run with the decision (provider of the service, governance, admin)."""
    reviewer = access_rules.actor_for(principal, request)
    flow_run_id = subscriptions.decide(request_id, body.decision, body.comment, principal, reviewer, orch)
    return AccessDecisionAccepted(
        access_request_id=request_id, flow_run_id=flow_run_id, decision=body.decision, reviewer=principal.subject
    )
