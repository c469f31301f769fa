"""What the access routes do: plans, subscriptions, and decisions on access requests.

A subscription to a service that needs approval waits `pending` with an access request and the
`approve-access` run it owes (durable intake: api/intake.py), all in one transaction; the decision
resumes that run, which records it. Everything else takes effect in one transaction too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from api import intake
from api.access import require_readable
from api.auth import Principal, Role
from api.consumers import account, require_active
from api.consumption_schemas import (
    AccessRequestOut,
    PlanOut,
    PlansOut,
    SubscribeIn,
    SubscriptionOut,
)
from api.orchestrator import Orchestrator
from api.status.record import flow_run_view
from core.domain import ServiceStatus
from core.errors import ConflictError, ForbiddenError, NotFoundError, SpecValidationError, UpstreamUnavailableError
from core.plans import Plan, approval_reason, choose_plan, currency_of, plans_of
from core.settings import Settings
from storage.database import session_scope
from storage.encryption import box_for
from storage.models import AccessRequest, Consumer, Service, ServiceSubscription
from storage.repositories import access_requests, audit, credentials, service_subscriptions, services
from storage.repositories.service_subscriptions import CANCELLED, EXPIRED, OPEN, PENDING
from storage.repositories.services import Actor

log = logging.getLogger("marketplace.access")


def plans_view(service: Service, settings: Settings) -> PlansOut:
    spec, fallback = service.spec, settings.consumption.default_plan
    currency = currency_of(spec)
    reason = approval_reason(spec)
    items = [PlanOut(**p.model_dump(), currency=currency) for p in plans_of(spec, fallback)]
    return PlansOut(service_id=service.id, access_approval=reason is not None, approval_reason=reason, items=items)


def subscribe(
    settings: Settings, principal: Principal, consumer_id: str, body: SubscribeIn, actor: Actor
) -> tuple[ServiceSubscription, AccessRequest | None]:
    """Open access at once, or (when the service needs approval) open the request and owe its
    approve-access run, in one transaction (the run starter creates the run after the commit)."""
    box = box_for(settings.consumption)
    with session_scope() as session:
        consumer, service, plan = _admissible(session, settings, principal, consumer_id, body, actor)
        reason, currency = approval_reason(service.spec), currency_of(service.spec)
        pending = reason is not None
        subscription = service_subscriptions.subscribe(
            session, consumer.id, service, plan, currency, actor, pending=pending
        )
        credentials.ensure_signing_secret(session, service.id, box, actor)  # every call to it is signed
        if reason is None:
            return subscription, None
        timeout = settings.consumption.access_approval_timeout_seconds
        request = access_requests.open_request(session, subscription, service, reason, body.message, timeout, actor)
        intake.owe(session, intake.access_approval_run(settings.prefect, service, consumer.id, request.id))
        return subscription, request


def _admissible(
    session: Session, settings: Settings, principal: Principal, consumer_id: str, body: SubscribeIn, actor: Actor
) -> tuple[Consumer, Service, Plan]:
    consumer = account(session, principal, consumer_id, actor)
    require_active(consumer)
    service = services.get(session, body.service_id)
    require_readable(principal, service.id, service.provider_id, service.status)
    if service.status == ServiceStatus.DEPRECATED.value:
        if not service_subscriptions.was_subscribed(session, consumer.id, service.id):
            raise ConflictError(f"service {service.id} is deprecated: it takes no new subscribers")
    elif service.status != ServiceStatus.ACTIVE.value:
        raise ConflictError(f"service {service.id} is {service.status}; only active services can be subscribed to")
    plan = choose_plan(service.spec, body.plan, settings.consumption.default_plan)
    if plan is None:
        names = [p.name for p in plans_of(service.spec, settings.consumption.default_plan)]
        detail = {"pointer": "/plan", "message": f"must be one of {names}", "code": "unknown_plan"}
        raise SpecValidationError(f"service {service.id} has no plan {body.plan!r}", [detail])
    return consumer, service, plan


def own_subscription(
    session: Session, principal: Principal, consumer_id: str, subscription_id: str, actor: Actor
) -> ServiceSubscription:
    """The named consumer's subscription (another's is 404)."""
    consumer = account(session, principal, consumer_id, actor)
    subscription = service_subscriptions.get_subscription(session, subscription_id, for_update=True)
    if subscription.consumer_id != consumer.id:
        raise NotFoundError(f"subscription {subscription_id} not found")
    return subscription


def cancel(
    orch: Orchestrator, principal: Principal, consumer_id: str, subscription_id: str, reason: str | None, actor: Actor
) -> str:
    """End a pending or active subscription; a pending one's approval run is cancelled too. Returns its id."""
    with session_scope() as session:
        subscription = own_subscription(session, principal, consumer_id, subscription_id, actor)
        request = access_requests.request_for(session, subscription.id)
        waiting = request is not None and request.status == PENDING
        flow_run_id = access_requests.flow_run_of(session, request) if request is not None and waiting else None
        if request is not None:
            access_requests.withdraw(session, request, CANCELLED, reason or "cancelled by the consumer", actor)
        service_subscriptions.end(session, subscription, CANCELLED, reason, actor)
    if flow_run_id:  # a run not created yet finds the request closed when it starts, and ends at once
        _cancel_run(orch, flow_run_id)
    return subscription_id


def _cancel_run(orch: Orchestrator, flow_run_id: str) -> None:
    """Best effort: a waiting run left behind, if ever resumed, finds the request closed and changes nothing."""
    try:
        orch.cancel(flow_run_id)
    except UpstreamUnavailableError:
        log.warning("could not cancel approve-access run %s of a cancelled subscription", flow_run_id)


def change_plan(
    settings: Settings, principal: Principal, consumer_id: str, subscription_id: str, plan_name: str, actor: Actor
) -> str:
    """Move an open subscription to another plan of its service (the service must still be live)."""
    with session_scope() as session:
        subscription = own_subscription(session, principal, consumer_id, subscription_id, actor)
        require_active(account(session, principal, consumer_id, actor))
        if subscription.status not in OPEN:
            raise ConflictError(f"subscription {subscription_id} is {subscription.status}")
        service = services.get(session, subscription.service_id)
        if service.status not in (ServiceStatus.ACTIVE.value, ServiceStatus.DEPRECATED.value):
            raise ConflictError(f"service {service.id} is {service.status}; its plans cannot be changed to")
        plan = choose_plan(service.spec, plan_name, settings.consumption.default_plan)
        if plan is None:
            names = [p.name for p in plans_of(service.spec, settings.consumption.default_plan)]
            detail = {"pointer": "/plan", "message": f"must be one of {names}", "code": "unknown_plan"}
            raise SpecValidationError(f"service {service.id} has no plan {plan_name!r}", [detail])
        service_subscriptions.change_plan(session, subscription, plan, actor)
    return subscription_id


def may_review(principal: Principal, request: AccessRequest) -> bool:
    """Governance, admin, and the provider of the service decide."""
    return principal.is_staff or principal.owns(request.provider_id)


def decide(
    request_id: str, decision: str, comment: str, principal: Principal, reviewer: Actor, orch: Orchestrator
) -> str:
    """Resume the waiting approve-access run with the decision; returns its flow run id.

    The run records the decision when it resumes, exactly as when resumed from the Prefect UI.
    A request past its deadline is closed `expired` here (409), whether or not the sweep got to it.
    """
    with session_scope() as session:
        request = access_requests.get_request(session, request_id, for_update=True)
        if not may_review(principal, request):
            if principal.role is Role.CONSUMER:
                raise NotFoundError(f"access request {request_id} not found")
            raise ForbiddenError(f"only provider {request.provider_id!r}, governance or admin decide this request")
        if request.status == PENDING and request.expires_at <= datetime.now(UTC):
            access_requests.withdraw(session, request, EXPIRED, "no decision before the deadline", reviewer)
    with session_scope() as session:
        request = access_requests.get_request(session, request_id, for_update=True)
        if request.status != PENDING:
            raise ConflictError(f"access request {request_id} is {request.status}; it waits for no decision")
        flow_run_id = access_requests.flow_run_of(session, request)
        if flow_run_id is None:
            raise ConflictError(f"the approval run of access request {request_id} is not started yet; retry shortly")
        run_input = {"decision": decision, "reviewer": reviewer.id, "reviewer_role": reviewer.role, "comment": comment}
        orch.resume_with(flow_run_id, run_input)
        audit.append(
            session,
            service_id=request.service_id,
            consumer_id=request.consumer_id,
            action="access_decision_submitted",
            **reviewer.audit_origin(),
            reason=comment or decision,
            flow_run_id=flow_run_id,
            details={"accessRequestId": request.id, "decision": decision},
        )
        return flow_run_id


def request_view(session: Session, request: AccessRequest, orch: Orchestrator) -> AccessRequestOut:
    return AccessRequestOut(
        id=request.id,
        subscription_id=request.subscription_id,
        service_id=request.service_id,
        provider_id=request.provider_id,
        consumer_id=request.consumer_id,
        reason=request.reason,
        message=request.message,
        status=request.status,
        requested_at=request.requested_at,
        expires_at=request.expires_at,
        decided_at=request.decided_at,
        reviewer=request.reviewer,
        reviewer_role=request.reviewer_role,
        comment=request.comment,
        flow_run=flow_run_view(access_requests.flow_run_of(session, request), orch),
    )


def subscription_view(
    session: Session, subscription: ServiceSubscription, service: Service, orch: Orchestrator
) -> SubscriptionOut:
    request = access_requests.request_for(session, subscription.id)
    return SubscriptionOut(
        id=subscription.id,
        consumer_id=subscription.consumer_id,
        service_id=subscription.service_id,
        service_name=service.name,
        status=subscription.status,
        plan_name=subscription.plan_name,
        plan=subscription.plan,
        requests_per_minute=subscription.requests_per_minute,
        key_requests_per_minute=subscription.key_requests_per_minute,
        requests_per_month=subscription.requests_per_month,
        tokens_per_month=subscription.tokens_per_month,
        max_tokens_per_request=subscription.max_tokens_per_request,
        price_per_month=subscription.price_per_month,
        currency=subscription.currency,
        created_at=subscription.created_at,
        activated_at=subscription.activated_at,
        ended_at=subscription.ended_at,
        ended_reason=subscription.ended_reason,
        access_request=request_view(session, request, orch) if request is not None else None,
    )


def requests_filter(principal: Principal, status: str | None, service_id: str | None) -> access_requests.RequestFilter:
    """Providers see requests for their services, consumers their own, staff all."""
    if principal.is_staff:
        return access_requests.RequestFilter(status=status, service_id=service_id)
    if principal.role is Role.PROVIDER:
        return access_requests.RequestFilter(status=status, service_id=service_id, provider_id=principal.subject)
    return access_requests.RequestFilter(status=status, service_id=service_id, consumer_id=principal.subject)


def may_see_request(principal: Principal, request: AccessRequest) -> bool:
    return may_review(principal, request) or (
        principal.role is Role.CONSUMER and principal.subject == request.consumer_id
    )
