"""A cap on each tenant's uploads in progress (``NNCOMPRESS_TENANT_MAX_CONCURRENT_UPLOADS``).

Each upload holds a connection, a temp file and, once received, a worker thread validating it; the
body pace (app/body_guard.py) bounds how long, this bounds how many. Counted in this API process
only: a slot must come back whatever ends the upload (success, error, disconnect, timeout, a
crash), and a count in shared storage would outlive a killed process.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge

from app.auth.principal import CurrentPrincipal
from app.deps import SettingsDep
from core.errors import TooManyUploads

# An upload's end cannot be predicted; a few seconds spreads retries without idling a client long.
RETRY_AFTER_SECONDS = 5


class UploadSlots:
    """Uploads in progress per tenant. Used from the event loop only, so it needs no lock."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._held: Tally[str] = Tally()
        self.in_progress = Gauge(
            "nncompress_uploads_in_progress", "Uploads being received or validated", registry=registry
        )
        self.refused = Counter(
            "nncompress_uploads_refused",
            "Uploads refused (429) because their tenant had its maximum in progress",
            registry=registry,
        )

    def held(self, tenant_id: str) -> int:
        return self._held[tenant_id]

    @contextmanager
    def hold(self, tenant_id: str, tenant_name: str, limit: int) -> Iterator[None]:
        """One slot of the tenant's ``limit`` for the duration of the block.

        Raises:
            TooManyUploads: the tenant already has ``limit`` uploads in progress.
        """
        if self._held[tenant_id] >= limit:
            self.refused.inc()
            raise TooManyUploads(
                f"tenant {tenant_name!r} already has {limit} uploads in progress "
                "(NNCOMPRESS_TENANT_MAX_CONCURRENT_UPLOADS); retry when one has finished",
                errors=[{"limit": limit}],
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self._held[tenant_id] += 1
        self.in_progress.inc()
        try:
            yield
        finally:
            self._held[tenant_id] -= 1
            if not self._held[tenant_id]:
                del self._held[tenant_id]
            self.in_progress.dec()


async def _hold_upload_slot(
    request: Request, principal: CurrentPrincipal, settings: SettingsDep
) -> AsyncIterator[None]:
    slots: UploadSlots = request.app.state.upload_slots
    with slots.hold(principal.tenant_id, principal.tenant_name, settings.tenant_max_concurrent_uploads):
        yield


# scope="function": the slot comes back when the route returns, before the response is sent, so a
# client that got its 201 can start its next upload at once.
UPLOAD_SLOT = Depends(_hold_upload_slot, scope="function")
