"""Alerts posted to Alertmanager's v2 API (`POST /api/v2/alerts`), for what happens outside Prometheus' view:
a failed Dagster run is known to the run-failure sensor at once, a scrape later to Prometheus."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

RESOLVE_AFTER = timedelta(hours=4)  # an alert nobody re-posts resolves itself (a later run may have passed)


def alert(labels: dict[str, str], annotations: dict[str, str], generator_url: str = "",
          now: datetime | None = None, resolve_after: timedelta = RESOLVE_AFTER) -> dict:
    """One alert in the v2 API's form: labels identify it (Alertmanager groups and routes on them)."""
    now = now or datetime.now(timezone.utc)
    body = {"labels": labels, "annotations": annotations, "startsAt": now.isoformat(),
            "endsAt": (now + resolve_after).isoformat()}
    if generator_url:
        body["generatorURL"] = generator_url
    return body


def post_alerts(url: str, alerts: list[dict], timeout_s: float = 5.0) -> None:
    """POST `alerts` to the Alertmanager at `url`; raises on anything but a 2xx answer."""
    request = urllib.request.Request(url.rstrip("/") + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        answer.read()


def run_failed_alert(job: str, run_id: str, error: str, generator_url: str = "", severity: str = "critical",
                     now: datetime | None = None) -> dict:
    """`RecsysRunFailed` for a failed Dagster run of `job`."""
    return alert({"alertname": "RecsysRunFailed", "job": job, "severity": severity, "service": "recsys-pipeline"},
                 {"summary": f"Dagster run of {job} failed", "run_id": run_id,
                  "description": error[:2000]}, generator_url, now)
