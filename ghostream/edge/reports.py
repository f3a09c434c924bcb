"""An edge's viewer reports: every few seconds, its audience per stream goes to the origin.

The origin adds them to its own counts (`Audience.receive`) and answers
with its totals (`Audience.heard_from_origin`), so the streamer and every
viewer see one number.  A report is a small JSON POST to
`/_edges/viewers` carrying the edge key as a bearer token; the edge's id is
random per run, so a restarted edge's old report simply expires.
"""

from __future__ import annotations

import logging
import secrets

import httpx
import trio

from ghostream.audience import Audience
from ghostream.config import OriginSettings

log = logging.getLogger(__name__)
# httpx logs every request at INFO: one line every few seconds says nothing.
logging.getLogger("httpx").setLevel(logging.WARNING)

REPORT_PERIOD = 3.0
REPORT_TIMEOUT = 5.0


class EdgeReporter:
    def __init__(self, settings: OriginSettings, audience: Audience) -> None:
        self.url = settings.web_url.rstrip("/") + "/_edges/viewers"
        self.key = settings.key
        self.audience = audience
        self.edge_id = secrets.token_hex(8)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        async with httpx.AsyncClient(headers=headers, timeout=REPORT_TIMEOUT) as client:
            task_status.started()
            failing = False
            while True:
                problem = await self._send(client)
                if problem and not failing:
                    # One line per outage; the key is never part of it.
                    log.warning("cannot report viewers to the origin %s: %s", self.url, problem)
                elif not problem and failing:
                    log.info("viewer reports reach the origin again")
                failing = bool(problem)
                await trio.sleep(REPORT_PERIOD)

    async def _send(self, client: httpx.AsyncClient) -> str:
        """What went wrong, or an empty string."""
        report = {"edge": self.edge_id, "viewers": self.audience.report()}
        try:
            response = await client.post(self.url, json=report)
        except httpx.HTTPError as exc:
            return str(exc) or type(exc).__name__
        if response.status_code == 403:
            return "refused: origin.key is not one of the origin's srt.pullKeys"
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        try:
            totals = response.json()["viewers"]
        except (ValueError, KeyError, TypeError):
            return "the origin's answer is not a viewer count"
        if isinstance(totals, dict):
            self.audience.heard_from_origin(
                {k: v for k, v in totals.items() if isinstance(k, str) and type(v) is int}
            )
        return ""
