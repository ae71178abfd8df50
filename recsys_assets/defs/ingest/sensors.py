"""The landing sensor: a new (or replaced) file starts exactly its partition, once."""


import json
import time
from datetime import datetime, timezone

from dagster import (
    AssetRecordsFilter,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from recsys_assets.data.schema import ITEMS_FILE, day_of_review_file
from recsys_assets.defs.ingest.assets import LANDING_FINGERPRINT, REFUSED_TAG, item_metadata, raw_reviews
from recsys_assets.defs.shared.partitions import daily_partitions
from recsys_assets.defs.shared.resources import LandingResource

# A day's load takes seconds to minutes: one still "running" after 15 minutes lost its worker, and would hold
# the one local run slot until the instance-wide limit (2 h); run monitoring fails it, run retries re-run it.
LANDING_RUN_TAGS = {"dagster/max_runtime": "900"}
# A load that failed for a reason other than its input (an outage longer than the step's own retries) is asked
# for again: after 2, 4, 8, 16, 32 minutes, then left to the file's next version (and the freshness checks).
RETRY_ATTEMPTS, RETRY_FIRST_DELAY_S, RETRY_LOOKBACK_S = 5, 120, 86_400


def loaded_fingerprint(instance, name: str) -> str | None:
    """The fingerprint of landing file `name` that the latest load of it (raw_reviews of its day, or
    item_metadata for the catalogue) recorded."""
    day = day_of_review_file(name)
    if day:  # each loaded day's partition has an observation of the file's version
        records = instance.fetch_observations(
            AssetRecordsFilter(asset_key=raw_reviews.key, asset_partitions=[day.isoformat()]), limit=1).records
        recorded = records[0].asset_observation.metadata.get(LANDING_FINGERPRINT) if records else None
        return recorded.value if recorded is not None else None
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=item_metadata.key), limit=1).records
    recorded = records[0].asset_materialization.metadata.get("landing_fingerprints") if records else None
    return recorded.value.get(name) if recorded is not None else None


def _request(name: str, run_key: str) -> RunRequest | None:
    if name == ITEMS_FILE:
        return RunRequest(run_key=run_key, asset_selection=[item_metadata.key], tags=LANDING_RUN_TAGS)
    day = day_of_review_file(name)
    if day is None:
        return None
    return RunRequest(run_key=run_key, partition_key=day.isoformat(), asset_selection=[raw_reviews.key],
                      tags=LANDING_RUN_TAGS)


def failed_load_retries(instance, files: dict[str, str], now: float | None = None) -> list[RunRequest]:
    """Requests to load again the files whose latest load failed (not refused for its input), with backoff.

    Run keys `<file>@<fingerprint>#<attempt>`: each attempt is requested once (Dagster skips a run key it has
    seen), a new version of the file is a new key of its own."""
    now = time.time() if now is None else now
    failed = instance.get_run_records(RunsFilter(
        tags={"dagster/sensor_name": "landing_sensor"}, statuses=[DagsterRunStatus.FAILURE],
        updated_after=datetime.fromtimestamp(now - RETRY_LOOKBACK_S, tz=timezone.utc)), limit=200)
    requests = {}
    for record in failed:
        run = record.dagster_run
        base, _, attempt = (run.tags.get("dagster/run_key") or "").partition("#")
        name, _, fingerprint = base.rpartition("@")
        attempt = int(attempt or 0) + 1
        failed_at = (record.end_time or record.update_timestamp.timestamp())
        if (not name or files.get(name) != fingerprint or run.tags.get(REFUSED_TAG) or attempt > RETRY_ATTEMPTS
                or now < failed_at + RETRY_FIRST_DELAY_S * 2 ** (attempt - 1)
                or loaded_fingerprint(instance, name) == fingerprint):
            continue
        request = _request(name, f"{base}#{attempt}")
        if request is not None:
            requests[request.run_key] = request
    return list(requests.values())


def landing_run_requests(files: dict[str, str], seen: dict[str, str], valid_keys: set[str] | None = None,
                         already_loaded=lambda name, fingerprint: False):
    """Run requests for the files that are new or changed since `seen`, and the names skipped as out of range.

    A file the cursor has not seen but whose exact version a run already loaded (e.g. by `make pipeline`
    before the sensor ran) is not loaded again."""
    requests, out_of_range = [], []
    for name, fingerprint in sorted(files.items()):
        if seen.get(name) == fingerprint or (name not in seen and already_loaded(name, fingerprint)):
            continue
        day = day_of_review_file(name)
        if day is not None and valid_keys is not None and day.isoformat() not in valid_keys:
            out_of_range.append(name)
            continue
        if (request := _request(name, f"{name}@{fingerprint}")) is not None:
            requests.append(request)
    return requests, out_of_range


@sensor(
    name="landing_sensor",
    minimum_interval_seconds=15,  # a listing of the landing folder: cheap
    default_status=DefaultSensorStatus.RUNNING,
    asset_selection=[raw_reviews, item_metadata],
    description="Starts raw_reviews for each new or replaced daily file, item_metadata when the catalogue changes.",
)
def landing_sensor(context: SensorEvaluationContext, landing: LandingResource):
    files = landing.zone().list_files()
    seen = json.loads(context.cursor) if context.cursor else {}
    valid_keys = set(daily_partitions.get_partition_keys())
    requests, out_of_range = landing_run_requests(
        files, seen, valid_keys, lambda name, fp: loaded_fingerprint(context.instance, name) == fp
    )
    if out_of_range:
        context.log.warning(
            f"{len(out_of_range)} file(s) precede the first partition {daily_partitions.start:%Y-%m-%d} "
            f"(set RECSYS_START_DATE earlier to load them): {out_of_range[:5]}"
        )
    requests += failed_load_retries(context.instance, files)
    cursor = json.dumps(files, sort_keys=True)
    if not requests:
        return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)
