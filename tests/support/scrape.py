"""Prometheus text read with prometheus_client's own parser, and waiting for a sample to show (Ray's metrics
agent receives a replica's numbers every report interval, so a scrape lags the requests by up to that)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str, **labels: str) -> list:
    """The samples named `name` (a family's `_total`, `_bucket`... included) whose labels include `labels`."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and labels.items() <= s.labels.items()]


def wait_for_samples(scrape: Callable[[], str], name: str, timeout_s: float = 60.0,
                     until: Callable[[list], bool] = bool, **labels: str) -> list:
    """Scrapes until the samples of `name` with `labels` satisfy `until` (default: there are some)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = samples(scrape(), name, **labels)
        if until(found):
            return found
        assert time.monotonic() < deadline, f"no {name}{labels} satisfying the condition after {timeout_s:.0f} s"
        time.sleep(1.0)
