"""The dashboards and alerts against a real Prometheus (Debian's `prometheus`, as `make observe` configures it)
scraping a real `recsys serve` (Ray's metrics export, every replica) and the pipeline exporter over the session's
served home, under a short load of every endpoint: each PromQL expression of the dashboards and each alert's
signal returns data, so no panel or alert watches a metric nobody exports."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import threading
import time
import urllib.parse
import urllib.request

import httpx
import pandas as pd
import pytest

from recsys_assets.data.schema import ITEMS_FILE
from recsys_assets.serving.ports import free_port
from recsys_assets.settings import REPO_ROOT, Settings
from tests.conftest import SERVICE_TOKEN

OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
sys.path.insert(0, str(OBSERVABILITY))

import alerts  # noqa: E402
import dashboards  # noqa: E402
import observe  # noqa: E402

SCRAPE = "1s"
# Grafana's own variables, as Grafana would fill them for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}
# Metrics that only exist once their event happened, which this healthy service never has: each reason says
# where the event is exercised instead.
EVENT_ONLY = {
    "ray_recsys_degraded_answers_total": "only while the serving store does not answer (tests/reliability)",
}
WAIT_FOR_DATA_S = 180


def _query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", f"{expr}: {body}"
    result = body["data"]["result"]
    return result if body["data"]["resultType"] == "vector" else [{"value": result}]


def _has_data(result: list[dict]) -> bool:
    """At least one sample that is a number (histogram_quantile over no observations is NaN: no data)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def _filled(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query of the committed dashboards."""
    found = []
    for path in sorted((OBSERVABILITY / "dashboards").glob("*.json")):
        for title, expr in dashboards.expressions(json.loads(path.read_text())):
            found.append((f"{path.name}: {title}", _filled(expr)))
    return found


def alert_signals() -> list[tuple[str, str]]:
    return [(f"alert {alert.name}", alert.signal) for alert in alerts.ALERTS]


def metric_names(expr: str) -> set[str]:
    """Our metric names an expression reads (Ray's `ray_...` and the exporter's `recsys_...`)."""
    return set(re.findall(r"\b((?:ray|recsys)_[a-zA-Z0-9_]+)\b(?!\s*\()", expr))


@pytest.fixture(scope="module")
def known(served_home):
    reviews = pd.concat([pd.read_parquet(p) for p in sorted(served_home.landing.path.glob("recsys_data_upto_*"))])
    users = reviews.groupby("user_id").size().sort_values(ascending=False).index[:20].tolist()
    items = pd.read_parquet(served_home.landing.path / ITEMS_FILE)["parent_asin"].tolist()[:20]
    return {"users": users, "items": items}


def _load(base_url: str, known: dict, stop: threading.Event, answers: dict) -> None:
    """One client going round every endpoint: known and unknown users (cold start), 404s, a refused like."""
    users = itertools.cycle([*known["users"], "never-seen-user"])
    items = itertools.cycle(known["items"])
    auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for n in itertools.count():
            if stop.is_set():
                return
            user, item = next(users), next(items)
            calls = [("GET", "/recs/u2i/rerank", {"params": {"user_id": user, "count": 10}}),
                     ("GET", "/recs/popular", {"params": {"count": 5}}),
                     ("GET", "/recs/i2i", {"params": {"item_id": item, "count": 5}}),
                     ("GET", "/recs/u2i/last_item_i2i", {"params": {"user_id": user, "count": 5}}),
                     ("GET", "/features/user", {"params": {"user_id": user}}),
                     ("POST", "/score/seq_rating_prediction", {"json": {"user_id": user, "item_ids": [item]}}),
                     ("GET", "/recs/i2i", {"params": {"item_id": "no-such-item"}})]
            if n % 10 == 0:  # an unknown item: answered (404), nothing written. The session's home is shared
                # with later modules, and a like would change online features they compare with the warehouse.
                calls.append(("POST", "/interactions", {"json": {"user_id": user, "item_id": "no-such-item"},
                                                        "headers": auth}))
            for method, path, kwargs in calls:
                try:
                    status = client.request(method, path, **kwargs).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                answers[status] = answers.get(status, 0) + 1


@pytest.fixture(scope="module")
def observed(served_home, service, known):
    """Prometheus and Alertmanager as `make observe` runs them (1 s scrapes), the pipeline exporter, and a
    client loading the service for the whole module. Yields Prometheus' URL once every target is up."""
    home = served_home.path
    stop, answers = threading.Event(), {}
    loader = threading.Thread(target=_load, args=(str(service.base_url).rstrip("/"), known, stop, answers),
                              daemon=True)
    with observe.pipeline_exporter(home, free_port()), \
            observe.local_stack(home, free_port(), free_port(), scrape_interval=SCRAPE) as stack:
        loader.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                jobs = {t["labels"].get("job"): t["health"] for t in _targets(stack.prometheus)}
                if jobs.get("recsys-serving") == "up" and jobs.get("recsys-pipeline") == "up":
                    break
                time.sleep(1)
            _wait_for_data(stack.prometheus, [*dashboard_expressions(), *alert_signals()])
            yield stack.prometheus
        finally:
            stop.set()
            loader.join(timeout=60)
    assert answers.get(200, 0) > 0, f"the load got no 200: {answers}"


def _targets(prometheus: str) -> list[dict]:
    with urllib.request.urlopen(f"{prometheus}/api/v1/targets", timeout=10) as response:
        return json.load(response)["data"]["activeTargets"]


def _wait_for_data(prometheus: str, expressions: list[tuple[str, str]]) -> None:
    """Until every expression returns data or WAIT_FOR_DATA_S passed (Ray's agent exports every few seconds)."""
    deadline = time.monotonic() + WAIT_FOR_DATA_S
    while time.monotonic() < deadline:
        if all(_has_data(_query(prometheus, expr)) for _, expr in expressions):
            return
        time.sleep(2)


def _empty(prometheus: str, expressions: list[tuple[str, str]]) -> list[str]:
    return [f"{where}: {expr}" for where, expr in expressions if not _has_data(_query(prometheus, expr))]


def test_prometheus_scrapes_serving_and_the_pipeline_exporter_through_file_sd(observed):
    jobs = {}
    for target in _targets(observed):
        jobs.setdefault(target["labels"].get("job"), []).append(target)
    assert set(jobs) >= {"recsys-serving", "recsys-pipeline"}, jobs
    for job in ("recsys-serving", "recsys-pipeline"):
        assert all(t["health"] == "up" for t in jobs[job]), [(t["scrapeUrl"], t["lastError"]) for t in jobs[job]]
    # Every replica's series reach it (Ray's export of the node), not one replica picked by a load balancer:
    # each replica Serve reports healthy has its own served-release series.
    healthy = {s["metric"]["replica"] for s in _query(observed, "ray_serve_deployment_replica_healthy == 1")}
    serving = {s["metric"]["replica"] for s in _query(observed, "ray_recsys_release_info == 1")}
    assert len(healthy) == Settings().serving.replicas and serving == healthy, (healthy, serving)


def test_every_dashboard_query_returns_data(observed):
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    empty = _empty(observed, expressions)
    assert not empty, "dashboard queries that returned no data:\n" + "\n".join(empty)


def test_every_alert_signal_returns_data_and_every_rule_evaluates(observed):
    empty = _empty(observed, alert_signals())
    assert not empty, "alert signals that returned no data:\n" + "\n".join(empty)
    with urllib.request.urlopen(f"{observed}/api/v1/rules", timeout=10) as response:
        rules = [r for g in json.load(response)["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {a.name for a in alerts.ALERTS}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_every_metric_a_query_reads_is_exported(observed):
    """A ratio written `(a or b * 0) / b` returns data even when `a` is misspelled: each name is checked alone."""
    with urllib.request.urlopen(f"{observed}/api/v1/label/__name__/values", timeout=10) as response:
        scraped = set(json.load(response)["data"])
    used = {name for _, expr in [*dashboard_expressions(), *alert_signals()] for name in metric_names(expr)}
    missing = sorted(used - scraped - set(EVENT_ONLY))
    assert not missing, f"queried but not exported: {missing}"


def test_served_release_is_labelled_with_its_models_and_index(observed, served_home):
    from recsys_assets.serving_data.kv import open_kv
    from recsys_assets.serving_data.release import ReleaseStore

    kv = open_kv(served_home.settings.serving_db_path, None)
    try:
        current = ReleaseStore(kv).current()
    finally:
        kv.close()
    info = [s["metric"] for s in _query(observed, "ray_recsys_release_info == 1")]
    assert info and {m["release"] for m in info} == {current.id}, (info, current)
    assert {m["day"] for m in info} == {current.day}, info
