"""Where Feast reads the batch feature rows: parquet exported from DuckDB (local) or BigQuery (gcp).

Feast's DuckDB offline store reads files, not DuckDB tables, so locally each day of a dbt feature table is
exported to its own parquet file: re-exporting a day replaces that file (never duplicates rows), and a
partially written file is never visible (written aside, then renamed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FileSource
from feast.data_source import DataSource

from recsys_assets.feature_store.definitions import TIMESTAMP_FIELD
from recsys_assets.warehouse.stores import FEATURES_SCHEMA, PARTITION_COLUMN


def _sample(keys: set[str], size: int, seed: int) -> list[str]:
    ordered = sorted(keys)
    return ordered if len(ordered) <= size else sorted(random.Random(seed).sample(ordered, size))


@dataclass(frozen=True)
class ParquetSources:
    """Local: `root/<table>/<YYYY-MM-DD>.parquet`, one file per day of the dbt table."""

    root: Path

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def day_file(self, table: str, day: date) -> Path:
        return self.table_dir(table) / f"{day.isoformat()}.parquet"

    def table_source(self, table: str) -> DataSource:
        # Absolute glob: Feast resolves FileSource paths against the working directory.
        return FileSource(name=f"{table}_source", path=str(self.table_dir(table) / "*.parquet"),
                          timestamp_field=TIMESTAMP_FIELD)

    def push_log_source(self, view: str) -> DataSource:
        return FileSource(name=f"{view}_log", path=str(self.root / "push_log" / f"{view}.parquet"),
                          timestamp_field=TIMESTAMP_FIELD)

    def sync_days(self, warehouse, table: str, days: list[date]) -> int:
        """Export each day of `table` from the DuckDB warehouse; a day without rows loses its file.

        The days' rows are read in one query and split here: years of imported history are thousands of
        days, where a query per day cost ~10 ms each."""
        self.table_dir(table).mkdir(parents=True, exist_ok=True)
        if not days:
            return 0
        with warehouse.connect(read_only=True) as con:
            rows = con.execute(
                f"select {PARTITION_COLUMN}, * exclude ({PARTITION_COLUMN}) from {FEATURES_SCHEMA}.{table} "
                f"where {PARTITION_COLUMN} between ? and ? order by all",  # by day, then as a day's file was
                [min(days), max(days)],
            ).to_arrow_table()
        by_day = _split_by(rows, PARTITION_COLUMN)
        written = 0
        for day in days:
            target = self.day_file(table, day)
            day_rows = by_day.get(day)
            if day_rows is None:
                target.unlink(missing_ok=True)
                continue
            aside = target.with_suffix(".parquet.tmp")
            pq.write_table(day_rows.drop_columns([PARTITION_COLUMN]), aside)
            aside.replace(target)
            written += day_rows.num_rows
        return written

    def sample_keys(self, table: str, key: str, days: list[date], size: int, seed: int) -> list[str]:
        paths = [str(path) for path in map(lambda day: self.day_file(table, day), days) if path.exists()]
        if not paths:
            return []
        # One multi-file read: one pq.read_table per day of a long history took seconds.
        keys = pc.unique(pq.read_table(paths, columns=[key]).column(key)).to_pylist()
        return _sample(set(keys), size, seed)


def _split_by(rows: pa.Table, column: str) -> dict:
    """A table sorted by `column` as {value: its rows} (slices of the one table, no copy)."""
    values = rows.column(column)
    if rows.num_rows == 0:
        return {}
    ends = pc.not_equal(values.slice(1), values.slice(0, rows.num_rows - 1))
    starts = [0, *(i + 1 for i in pc.indices_nonzero(ends).to_pylist()), rows.num_rows]
    return {values[a].as_py(): rows.slice(a, b - a) for a, b in zip(starts, starts[1:])}


@dataclass(frozen=True)
class BigQuerySources:
    """gcp: the dbt tables in BigQuery, read in place (nothing to copy)."""

    project: str
    dataset: str

    def _table(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def table_source(self, table: str) -> DataSource:
        from feast.infra.offline_stores.bigquery_source import BigQuerySource

        return BigQuerySource(name=f"{table}_source", table=self._table(table), timestamp_field=TIMESTAMP_FIELD)

    def push_log_source(self, view: str) -> DataSource:
        from feast.infra.offline_stores.bigquery_source import BigQuerySource

        return BigQuerySource(name=f"{view}_log", table=self._table(f"{view}_push_log"),
                              timestamp_field=TIMESTAMP_FIELD)

    def _query(self, sql: str, days: list[date]) -> list:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ArrayQueryParameter("days", "DATE", days)])
        return list(bigquery.Client(project=self.project).query(sql, job_config=config).result())

    def sync_days(self, warehouse, table: str, days: list[date]) -> int:
        rows = self._query(f"select count(*) from `{self._table(table)}` "
                           f"where {PARTITION_COLUMN} in unnest(@days)", days)
        return rows[0][0]

    def sample_keys(self, table: str, key: str, days: list[date], size: int, seed: int) -> list[str]:
        rows = self._query(f"select distinct {key} from `{self._table(table)}` "
                           f"where {PARTITION_COLUMN} in unnest(@days)", days)
        return _sample({r[0] for r in rows}, size, seed)
