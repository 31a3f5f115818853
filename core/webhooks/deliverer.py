"""Sends pending webhook deliveries, retries failures with exponential backoff, records every attempt.

Runs as a thread beside the reconciler: in the embedded dispatcher and in every Celery worker's main
process. Several deliverers may poll the same table; each claims a row with a conditional UPDATE
(``at`` from NULL to now), so an attempt is made once. A deliverer that dies mid-attempt leaves a
claimed row without outcome; the next pass records it as failed and schedules the retry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Job, Tenant, WebhookDelivery
from core.db.types import utcnow
from core.errors import InvalidWebhook
from core.outbox import OutboxPoller
from core.settings import Settings
from core.webhooks.signing import sign
from core.webhooks.urls import check_webhook_url, pinned_request, refused_address

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry: bool  # False for a permanent refusal (a URL that now resolves to a private address)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDeliverer(OutboxPoller):
    """One pass with :meth:`run_once`; a background thread with :meth:`start`/:meth:`stop`."""

    table = WebhookDelivery
    thread_name = "nncompress-webhooks"

    def __init__(self, session_factory: Callable[[], Session], settings: Settings) -> None:
        super().__init__(session_factory, settings)
        # trust_env=False: a proxy from the environment would make the address checks meaningless.
        self._http = httpx.Client(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            event_hooks={"response": [_note_peer]},
        )

    def backoff_base(self) -> float:
        return self.settings.webhook_backoff_seconds

    def poll_seconds(self) -> float:
        return self.settings.webhook_poll_seconds

    def _attempt(self, delivery_id: int) -> int:
        with self.session_factory() as session:
            if not self._claim(session, delivery_id):
                return 0  # another deliverer took it
            row = session.get(WebhookDelivery, delivery_id)
            job = session.get(Job, row.job_id) if row is not None else None
            if row is None or job is None or not job.webhook:
                return 0
            tenant = session.get(Tenant, job.tenant_id)
            secret = job.webhook.get("secret") or (tenant.webhook_secret if tenant else None)
            url = str(job.webhook["url"])
            message_id, body = row.message_id, json.dumps(row.payload, separators=(",", ":")).encode()
        outcome = self._send(url, str(secret), message_id, body)
        self._record(delivery_id, outcome)
        return 1

    def _send(self, url: str, secret: str, message_id: str, body: bytes) -> Outcome:
        try:
            addresses = check_webhook_url(url, allow_private=self.settings.webhook_allow_private)
        except InvalidWebhook as exc:
            return Outcome(None, f"refused: {exc.detail}", retry=False)
        extensions: dict[str, str] = {}
        if addresses:
            # Connect to the address just checked, not to whatever the name resolves to next.
            url, pinned_headers, extensions = pinned_request(url, addresses[0])
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "nncompress-webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
        }
        if addresses:
            headers.update(pinned_headers)
        try:
            response = self._http.post(url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], retry=True)
        peer = _peer_address(response)
        if addresses and (peer is None or refused_address(peer)):
            return Outcome(None, f"refused: connected to {peer}, not a checked public address", retry=False)
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return Outcome(response.status_code, error, retry=True)

    def _record(self, delivery_id: int, outcome: Outcome) -> None:
        now = utcnow()
        with self.session_factory() as session:
            row = session.get(WebhookDelivery, delivery_id)
            assert row is not None
            row.status_code, row.error = outcome.status_code, outcome.error
            if outcome.delivered:
                row.delivered_at = now
            elif outcome.retry and row.attempt < self.settings.webhook_max_attempts:
                session.add(
                    WebhookDelivery(
                        message_id=row.message_id,
                        job_id=row.job_id,
                        event=row.event,
                        payload=row.payload,
                        attempt=row.attempt + 1,
                        next_attempt_at=now + timedelta(seconds=self.backoff(row.attempt)),
                    )
                )
            session.commit()
        log.log(
            logging.INFO if outcome.delivered else logging.WARNING,
            "webhook %s attempt %d: %s",
            row.event,
            row.attempt,
            "delivered" if outcome.delivered else outcome.error,
            extra={"job_id": row.job_id},
        )

    def _recover_abandoned(self) -> None:
        """Claimed rows with no outcome long after the timeout: their deliverer died mid-attempt."""
        cutoff = utcnow() - timedelta(seconds=self.settings.webhook_timeout_seconds + 60)
        with self.session_factory() as session:
            stale = list(
                session.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.at < cutoff,
                        WebhookDelivery.status_code.is_(None),
                        WebhookDelivery.error.is_(None),
                        WebhookDelivery.delivered_at.is_(None),
                    )
                )
            )
        for delivery_id in stale:
            self._record(delivery_id, Outcome(None, "the deliverer stopped during the attempt", retry=True))

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._http.close()


def _note_peer(response: httpx.Response) -> None:
    # Read while the connection is surely open (before the body): the server may close it afterwards.
    stream = response.extensions.get("network_stream")
    try:
        peer = stream.get_extra_info("server_addr") if stream is not None else None
    except OSError:
        peer = None
    response.extensions["peer_address"] = str(peer[0]) if peer else None


def _peer_address(response: httpx.Response) -> str | None:
    """The IP address the request was actually sent to, as the socket reported it."""
    peer = response.extensions.get("peer_address")
    return str(peer) if peer else None
