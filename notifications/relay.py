"""The outbox relay: moves events from `outbox_events` to Kafka, in order, each id once.

    python -m notifications.relay        # needs MARKETPLACE_KAFKA__BOOTSTRAP_SERVERS

Why a process and not a Prefect flow: the relay runs all the time, should pass an event on
within a fraction of a second, and must be the only producer (one producer keeps a service's
events in order). A scheduled flow would add seconds of start-up per run and could overlap
with the previous run; a flow that never ends would hold a worker slot for nothing. So it is a
plain long-running process, started next to the API (deployments.stack); on PostgreSQL an
advisory lock lets a second copy wait instead of producing too (a relay that loses its database
connection loses the lock, and stops producing at its next round).

A round: read the due pending events in id order (`batch_size`), hand each to confluent-kafka's
idempotent producer (acks=all, key = service id), wait up to `delivery_timeout_seconds` for the
delivery reports, then in one transaction mark the acknowledged events `delivered` and count a
failed attempt for the rest (exponential backoff in `next_attempt_at`; `dead` after
`max_attempts`). Order per service holds across failures: within a round nothing of a service
is produced after one of its events failed or is still unacknowledged, and between rounds
`outbox.due_pending` holds back a service's events behind one waiting for a retry or dead.

Exactly once, per event id:
- The producer never gives up on a message by itself (message.timeout.ms=0) and the relay
  never hands an event to it twice. A produce that reached the broker but whose ack was lost
  is retried by librdkafka with the same producer id and sequence number, and the broker drops
  the repeat. While the broker is away, rounds count failed attempts (that is what operators
  see and what dead-letters), but the bytes stay with the producer; an ack that comes later,
  even for an event already dead, marks it delivered.
- An ack whose `delivered` mark cannot be committed (database away) is kept in memory and
  written by a later round; the event is not produced again meanwhile.
- Only a new producer session can repeat an event: after a relay crash or kill (acked but not
  yet marked events are produced again by the next relay), after a fatal producer error, or
  when the broker lost its state (Tansu in memory: its restart drops the topic and every
  producer id). So the topic is at-least-once across sessions and consumers must drop repeats
  by the CloudEvents `id` (header `ce_id`), which is unique per event and stable across resends.
A SIGTERM or SIGINT ends the current round, then flushes what the producer holds (a few
seconds at most), records those acks and exits.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from core.settings import KafkaSettings, get_settings
from notifications.producer import RelayProducer
from storage.database import get_engine, session_scope
from storage.repositories import outbox

log = logging.getLogger("marketplace.relay")
SHUTDOWN_FLUSH_SECONDS = 5.0


@dataclass
class RoundResult:
    read: int = 0
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class OutboxRelay:
    """Relays the outbox to `settings.topic`: `run()` until `stop()`, or `run_once()` round by round."""

    def __init__(self, settings: KafkaSettings, client_id: str = "marketplace-outbox-relay") -> None:
        if not settings.bootstrap_servers:
            raise ValueError("the relay needs kafka.bootstrap_servers (MARKETPLACE_KAFKA__BOOTSTRAP_SERVERS)")
        self.settings = settings
        self._backoff = outbox.Backoff(settings.retry_base_seconds, settings.retry_max_seconds)
        self._session = RelayProducer(settings, client_id)
        self._lock_connection: Connection | None = None
        self._stopping = threading.Event()

    def run(self) -> None:
        """Relay until `stop()`; then flush, record the last acks and let go of everything."""
        try:
            while not self._stopping.is_set():
                try:
                    result = self.run_once() if self._is_leader() else RoundResult()
                except Exception:  # the database or the broker away: the relay outlives both
                    log.exception("relay round failed; trying again")
                    result = RoundResult()
                if result.produced == 0 or result.read < self.settings.batch_size:
                    self._stopping.wait(self.settings.poll_interval_seconds)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask `run()` to finish its round and return (safe from a signal handler or another thread)."""
        self._stopping.set()

    def run_once(self) -> RoundResult:
        """One round: produce the due events, wait for their acks, record what happened."""
        producer = self._session.prepare()
        with session_scope() as session:
            due = outbox.due_pending(session, limit=self.settings.batch_size)
            batch = [(e.id, e.aggregate_id, e.payload) for e in due]
        produced, waiting = self._hand_over(producer, batch)
        timeout = self.settings.delivery_timeout_seconds
        self._session.wait(producer, waiting, timeout, self._stopping, SHUTDOWN_FLUSH_SECONDS)
        unacked = {
            row_id: f"no acknowledgement within {timeout:g} s; the producer keeps retrying it"
            for row_id in waiting & self._session.holding
            if not self._stopping.is_set()  # cut short by a stop: close() flushes them, no attempt lost
        }
        result = self._record(unacked)
        result.read, result.produced = len(batch), produced
        return result

    def _hand_over(self, producer: Producer, batch: list[tuple[int, str, dict[str, Any]]]) -> tuple[int, set[int]]:
        """Produce the batch in order: how many were produced, and the events the round waits for
        (those and the ones the producer still holds from earlier rounds)."""
        waiting: set[int] = set()
        blocked: set[str] = set()  # services with an event failed or unacknowledged: the rest of them waits
        produced = 0
        for row_id, aggregate_id, payload in batch:
            if aggregate_id in blocked or row_id in self._session.acked:
                continue  # an acked event is on the topic: its successors may follow
            if row_id in self._session.holding:  # handed over in an earlier round: never twice
                waiting.add(row_id)
            elif row_id not in self._session.errors:
                try:
                    if self._session.send(producer, row_id, aggregate_id, payload):
                        waiting.add(row_id)
                        produced += 1
                        continue
                except BufferError:
                    break  # the producer's queue is full: the rest waits for a later round
            blocked.add(aggregate_id)
        return produced, waiting

    def close(self) -> None:
        """Flush for a few seconds, record those acks, let go of the producer and the relay lock."""
        self._session.close(SHUTDOWN_FLUSH_SECONDS)
        try:
            self._record({})
        except SQLAlchemyError:
            log.exception("could not record %d acknowledged events", len(self._session.acked))
        self._release_lock()

    def _record(self, unacked: dict[int, str]) -> RoundResult:
        """Write the reports gathered so far in one transaction; on failure they wait for the next round."""
        acked, errors = set(self._session.acked), {**unacked, **self._session.errors}
        result = RoundResult()
        if not acked and not errors:
            return result
        with session_scope() as session:
            result.delivered = outbox.mark_delivered(session, acked)
            failed = outbox.record_failures(
                session, errors, max_attempts=self.settings.max_attempts, backoff=self._backoff
            )
        self._session.recorded(acked, set(errors))
        result.failed = len(failed)
        if failed:
            log.warning("%d events not delivered (first: #%d, %s)", len(failed), failed[0].id, failed[0].last_error)
        for event in failed:
            if event.status == outbox.DEAD:
                result.dead += 1
                log.error("event %s (#%d) is dead after %d attempts", event.event_id, event.id, event.attempts)
        return result

    def _is_leader(self) -> bool:
        """Whether this relay holds the relay lock (taking it when free); a lost connection loses it."""
        try:
            if self._lock_connection is None:
                connection = get_engine().connect()
                if not outbox.try_lock_relay(connection):
                    connection.close()
                    return False
                connection.commit()  # the lock belongs to the connection: leave no transaction open
                self._lock_connection = connection
                log.info("holding the relay lock")
            held = outbox.holds_relay_lock(self._lock_connection)
            self._lock_connection.commit()
            if not held:
                raise LookupError("the relay lock is no longer held by its connection")
            return True
        except (SQLAlchemyError, LookupError):
            log.exception("relay lock lost; trying to take it again")
            self._release_lock()
            return False

    def _release_lock(self) -> None:
        if self._lock_connection is not None:
            # Close the database connection itself: back in the pool it would still hold the lock.
            self._lock_connection.invalidate()
            self._lock_connection.close()
            self._lock_connection = None


def main() -> None:
    """Run the relay in the foreground until SIGTERM or SIGINT."""
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not settings.kafka.bootstrap_servers:
        sys.exit("MARKETPLACE_KAFKA__BOOTSTRAP_SERVERS is not set: events stay in the outbox table")
    relay = OutboxRelay(settings.kafka)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the round", signum)
        relay.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("relaying the outbox to %s on %s", settings.kafka.topic, settings.kafka.bootstrap_servers)
    relay.run()


if __name__ == "__main__":
    main()
