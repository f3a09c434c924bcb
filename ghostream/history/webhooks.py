"""Webhooks: the history's events POSTed to the operator's receivers, durably.

Each webhook follows the log with a cursor of its own, kept in the history
database: an event is delivered, the receiver answers 2xx, then the cursor
moves past it.  A receiver that is down gets the same event again with a
growing delay, and after a restart or a crash deliveries resume from the last
acknowledged event, so every event arrives at least once and in order.
Receivers never slow anything else down: each webhook is its own task reading
the log back from disk, and the broker, the log's writer and other webhooks
never wait for it.

Each body is the event as JSON; its HMAC-SHA256 under the webhook's secret is
sent as `X-Ghostream-Signature: sha256=HEX`, so a receiver can check it came
from this server.  The event's id (`X-Ghostream-Event-Id`) tells a receiver
that got an event twice which one it already has.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import httpx
import trio

from ghostream.backoff import Backoff
from ghostream.config import Webhook, site_of
from ghostream.history import queries
from ghostream.history.follow import follow
from ghostream.history.log import EventLog
from ghostream.monitoring import WEBHOOK_BEHIND, WEBHOOK_DELIVERIES

log = logging.getLogger(__name__)

TIMEOUT = 10.0
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
SIGNATURE_HEADER = "X-Ghostream-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDelivery:
    def __init__(self, hook: Webhook, history: EventLog) -> None:
        self.hook = hook
        self.name = hook.label
        self.history = history
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        saved = await self.history.query(queries.webhook_cursor, self.name)
        if saved is None:
            # A new webhook starts with what happens from now on, not the whole past.
            cursor = self.history.last_id
            await self._save(cursor)
            log.info("webhook %s: delivering new events to %s", self.name, site_of(self.hook.url))
        else:
            cursor, self.delivered, self.failed = (
                saved["last_id"],
                saved["delivered"],
                saved["failed"],
            )
            log.info("webhook %s: resuming after event %d", self.name, cursor)
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            async for batch in follow(self.history, cursor, self.hook.events):
                for event in batch:
                    WEBHOOK_BEHIND.labels(self.name).set(self.history.last_id - event["id"] + 1)
                    await self._deliver(client, event)
                    await self._save(event["id"])
                WEBHOOK_BEHIND.labels(self.name).set(0)

    async def _deliver(self, client: httpx.AsyncClient, event: dict) -> None:
        """POST one event until its receiver acknowledges it."""
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Ghostream webhook",
            SIGNATURE_HEADER: signature(self.hook.secret, body),
            "X-Ghostream-Event-Id": str(event["id"]),
            "X-Ghostream-Event": event["kind"],
        }
        backoff = Backoff(FIRST_RETRY, MAX_RETRY)
        down_since: float | None = None
        while True:
            try:
                response = await client.post(self.hook.url, content=body, headers=headers)
                problem = "" if response.is_success else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            if not problem:
                self.delivered += 1
                WEBHOOK_DELIVERIES.labels(self.name, "delivered").inc()
                if down_since is not None:
                    log.info(
                        "webhook %s: receiver back after %.0f s; delivering again",
                        self.name,
                        time.monotonic() - down_since,
                    )
                return
            self.failed += 1
            WEBHOOK_DELIVERIES.labels(self.name, "failed").inc()
            delay = backoff.failed()
            if down_since is None:
                down_since = time.monotonic()
                log.warning(
                    "webhook %s: %s did not take event %d (%s); retrying, events wait in the log",
                    self.name,
                    site_of(self.hook.url),
                    event["id"],
                    problem,
                )
            await trio.sleep(delay)

    async def _save(self, last_id: int) -> None:
        await self.history.save_cursor(
            self.name, last_id, delivered=self.delivered, failed=self.failed
        )


async def deliver_webhooks(
    hooks: list[Webhook],
    history: EventLog,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The webhooks service: one delivery task per configured webhook."""
    async with trio.open_nursery() as nursery:
        for hook in hooks:
            nursery.start_soon(WebhookDelivery(hook, history).run, name=f"webhook {hook.label}")
        task_status.started()
