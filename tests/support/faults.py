"""The fault suite's harness: a bounded closed-loop load on a running service, and one fault measured under
it (requests failed, what was served meanwhile, time to recover), for tests/reliability and bench/reliability.

Closed loop: each client sends its next request when the previous one answered, so the load stays what the
service can take (an open loop would measure overload, not the fault).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it answered
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    release: str | None
    pipeline: str | None
    latency_s: float
    degraded: bool = False  # ranked without some of the store's candidates (`degraded` in the answer)


class ClosedLoopLoad:
    """`clients` threads asking the rerank of `users` in turn, until stopped; every answer kept."""

    def __init__(self, url: str, users: list[str], clients: int = 3, timeout_s: float = 10.0):
        self.url, self.users, self.clients, self.timeout_s = url, users, clients, timeout_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _client(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            n = offset
            while not self._stop.is_set():
                user = self.users[n % len(self.users)]
                n += self.clients
                started = time.monotonic()
                try:
                    response = client.get("/recs/u2i/rerank", params={"user_id": user, "count": 10})
                    body = response.json() if response.status_code == 200 else {}
                    status = response.status_code
                except httpx.HTTPError:
                    body, status = {}, 0
                self.answers.append(Answer(time.monotonic(), status, body.get("release"), body.get("pipeline"),
                                           time.monotonic() - started, bool(body.get("degraded"))))

    def __enter__(self) -> ClosedLoopLoad:
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 5)

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in list(self.answers) if start <= a.at <= end]


@dataclass
class FaultResult:
    fault: str
    requests: int
    failed: int
    failed_share: float
    recovery_s: float | None  # from the end of the fault until serving is what it should be; None: never
    served: dict[str, int]  # release id (or "popularity:<id>") -> answers during the fault
    p99_ms: float
    statuses: dict[str, int] = field(default_factory=dict)  # HTTP status (0: no answer) -> answers
    degraded: int = 0  # answers ranked without some of the store's candidates
    notes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _served(answers: list[Answer]) -> dict[str, int]:
    return dict(Counter(f"{a.pipeline}:{a.release}" if a.pipeline == "popularity" else str(a.release)
                        for a in answers if a.status == 200))


def _p99_ms(answers: list[Answer]) -> float:
    latencies = sorted(a.latency_s for a in answers)
    return round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1) if latencies else 0.0


def measure_fault(name: str, load: ClosedLoopLoad, inject: Callable[[], None], hold_s: float,
                  restore: Callable[[], None], recovered: Callable[[], bool], recovery_timeout_s: float = 60.0,
                  notes: dict | None = None) -> FaultResult:
    """Inject the fault, keep it `hold_s` under the running load, restore, then time until `recovered()`.
    Requests are counted from the injection until recovery (or its timeout)."""
    start = time.monotonic()
    inject()
    time.sleep(hold_s)
    restore()
    restored = time.monotonic()
    recovery_s = None
    while time.monotonic() - restored < recovery_timeout_s:
        if recovered():
            recovery_s = round(time.monotonic() - restored, 1)
            break
        time.sleep(0.5)
    answers = load.between(start, time.monotonic())
    failed = sum(1 for a in answers if a.status != 200)
    return FaultResult(fault=name, requests=len(answers), failed=failed,
                       failed_share=round(failed / len(answers), 5) if answers else 1.0, recovery_s=recovery_s,
                       served=_served(answers), p99_ms=_p99_ms(answers),
                       statuses=dict(Counter(str(a.status) for a in answers)),
                       degraded=sum(1 for a in answers if a.degraded), notes=notes or {})


def serving_release(url: str, release_id: str, answers: int = 8) -> bool:
    """`answers` readyz in a row (spread over the replicas by the ingress) name the release, none degraded."""
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(answers):
            try:
                body = client.get("/readyz").json()
                if body.get("release") != release_id or "degraded" in body:
                    return False
            except (httpx.HTTPError, ValueError):
                return False
    return True


# The targets of issue 33's fault suite.
MAX_FAILED_SHARE, MAX_RECOVERY_S = 0.001, 30.0


def record(result: FaultResult) -> None:
    """Adds the result to the JSON list at RECSYS_RELIABILITY_RESULTS (set by `make soak`), if set."""
    if path := os.environ.get("RECSYS_RELIABILITY_RESULTS"):
        target = Path(path)
        kept = json.loads(target.read_text()) if target.exists() else []
        target.write_text(json.dumps([*kept, result.as_dict()], indent=2) + "\n")


def check_fault(result: FaultResult, served_id: str, during_fault_only: str | None = None) -> None:
    """Recorded, then held to the targets: the load ran through the fault, at most 0.1% of requests failed,
    serving recovered within 30 s, and only `served_id` was served (never popularity) besides
    `during_fault_only`, a release the fault's own restore publishes."""
    record(result)
    assert result.requests > 20, result
    assert result.failed_share <= MAX_FAILED_SHARE, result
    assert result.recovery_s is not None and result.recovery_s <= MAX_RECOVERY_S, result
    assert set(result.served) - {during_fault_only} == {served_id}, result
