"""Dagster's local event log with a range run's per-day events written together.

A run over a range of daily partitions records one materialization per asset and day (and raw_reviews one
observation per day): twenty years of imported history is 8,000 days, ~50,000 events in one run. Dagster's
SQLite storage writes each event on its own (a new connection and a commit in the run's database and in the
index): ~10 ms each, most of a long history's load time. Dagster marks a ranged output's events as one batch
(`DAGSTER_EVENT_BATCH_SIZE`) but its SQLite storage still writes them one at a time; this one writes a batch
in one transaction per database, as Dagster's Postgres storage does (gcp). The same rows either way: each
event in the run's database and the index, its tags, and the asset's latest event.
"""

import os
from collections.abc import Sequence

from dagster import DagsterEventType, EventLogEntry
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, generate_event_batch_id
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import serialize_value

# Events Dagster groups per ranged output are written this many at a time (one run over 8,000 days: 8 batches
# per asset). Dagster reads the variable in the process that runs the step: the code location sets it.
EVENT_BATCH_SIZE = "1000"
_BATCHED_TYPES = ({DagsterEventType.ASSET_MATERIALIZATION}, {DagsterEventType.ASSET_OBSERVATION})


def enable_event_batches() -> None:
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)


# The code location loads every module of defs/ (and the ingest assets import this one): every process that
# runs a step has batching on. A storage without batches of its own stores them event by event.
enable_event_batches()


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage whose `store_event_batch` writes a batch of materializations (or observations) of
    one run in one transaction per database; anything else is stored event by event, as Dagster does."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "BatchedSqliteEventLogStorage":
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        types = {event.get_dagster_event().event_type for event in events if event.is_dagster_event}
        if (len(events) < 2 or types not in _BATCHED_TYPES or len({event.run_id for event in events}) != 1
                or not all(event.is_dagster_event for event in events)):
            return super().store_event_batch(events)
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        with self.index_transaction() as conn:
            event_ids = []
            for statement in statements:
                with db_result(conn, statement) as result:
                    event_ids.append(result.inserted_primary_key[0])
            self._store_asset_event_tags(conn, events, event_ids)
            # The asset's row keeps its latest event (each event would overwrite the one before it).
            self._store_asset_event(conn, events[-1], event_ids[-1])

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """Dagster's own rows (one planned execution per check and partition), with the event serialized once for
        all of them: Dagster serializes it again for each partition, and a run over 8,215 days with 18 checks
        spent a minute of its start on that."""
        planned = event.get_dagster_event().event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        serialized, stamp = serialize_value(event), self._event_insert_timestamp(event)
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert().values([
                dict(asset_key=planned.asset_key.to_string(), check_name=planned.check_name, partition=key,
                     run_id=event.run_id, execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                     evaluation_event=serialized, evaluation_event_timestamp=stamp,
                     evaluation_event_storage_id=event_id)
                for key in keys]))


def log_observations(context, observations: list) -> None:
    """Log an asset's observations (one per partition of a range) as one batch of events, like the
    materializations Dagster logs for a ranged output; `context.log_event` would store them one at a time."""
    step = context.get_step_execution_context()
    batch = generate_event_batch_id()
    for i, observation in enumerate(observations):
        DagsterEvent.asset_observation(step, observation, DagsterEventBatchMetadata(batch, i == len(observations) - 1))
