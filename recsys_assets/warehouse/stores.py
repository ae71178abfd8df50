"""Warehouses the raw data is loaded into: DuckDB (local) and BigQuery (gcp), one interface.

Loading a partition replaces it whole, in one transaction (DuckDB) or one partition-truncating load
job (BigQuery): re-loading a day never duplicates rows, and a failed load leaves the old rows in place.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa

RAW_SCHEMA = "raw"
# Where dbt builds the feature tables in the DuckDB file (the profile's schema).
FEATURES_SCHEMA = "main"
PARTITION_COLUMN = "partition_date"


class Warehouse(Protocol):
    def replace_partitions(self, table: str, rows_by_day: dict[date, pa.Table]) -> int:
        """Replace each given day of `table` with its rows; returns rows written."""

    def replace_table(self, table: str, rows: pa.Table) -> int: ...

    def row_counts(self, table: str) -> dict[date, int]: ...

    def read_reviews(self, first: date | None, last: date) -> pa.Table:
        """Raw reviews of partitions [first, last] (first None: from the beginning)."""

    def read_items(self) -> pa.Table: ...


def _with_partition_column(day: date, rows: pa.Table) -> pa.Table:
    return rows.append_column(PARTITION_COLUMN, pa.array([day] * rows.num_rows, type=pa.date32()))


@dataclass
class DuckDBWarehouse:
    path: Path
    lock_timeout_s: float = 120.0

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, waiting while another process holds the file (DuckDB allows one writer process)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        try:
            yield con
        finally:
            con.close()

    def replace_partitions(self, table: str, rows_by_day: dict[date, pa.Table]) -> int:
        if not rows_by_day:
            return 0
        staged = pa.concat_tables([_with_partition_column(d, t) for d, t in sorted(rows_by_day.items())])
        target = f"{RAW_SCHEMA}.{table}"
        with self.connect() as con:
            con.execute(f"create schema if not exists {RAW_SCHEMA}")
            con.register("staged", staged)
            con.execute(f"create table if not exists {target} as select * from staged limit 0")
            con.execute("begin transaction")
            try:
                con.execute(f"delete from {target} where {PARTITION_COLUMN} in (select distinct {PARTITION_COLUMN} from staged)")
                con.execute(f"insert into {target} by name select * from staged")
                con.execute("commit")
            except Exception:
                con.execute("rollback")
                raise
        return staged.num_rows

    def replace_table(self, table: str, rows: pa.Table) -> int:
        with self.connect() as con:
            con.execute(f"create schema if not exists {RAW_SCHEMA}")
            con.register("staged", rows)
            con.execute(f"create or replace table {RAW_SCHEMA}.{table} as select * from staged")
        return rows.num_rows

    def row_counts(self, table: str) -> dict[date, int]:
        with self.connect(read_only=True) as con:
            exists = con.execute(
                "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                [RAW_SCHEMA, table],
            ).fetchone()[0]
            if not exists:
                return {}
            rows = con.execute(
                f"select {PARTITION_COLUMN}, count(*) from {RAW_SCHEMA}.{table} group by 1 order by 1"
            ).fetchall()
        return dict(rows)

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params).to_arrow_table()

    def read_reviews(self, first: date | None, last: date) -> pa.Table:
        return self.query(_reviews_sql(f"{RAW_SCHEMA}.raw_reviews", "?", "?"), [first or date.min, last])

    def read_items(self) -> pa.Table:
        return self.query(f"select * from {RAW_SCHEMA}.item_metadata")


@dataclass
class BigQueryWarehouse:
    project: str
    dataset: str  # Settings.gcp: the raw dataset and the location
    location: str

    def _client(self):
        from google.cloud import bigquery  # imported lazily: only the gcp target needs it

        return bigquery.Client(project=self.project, location=self.location)

    def _table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def replace_partitions(self, table: str, rows_by_day: dict[date, pa.Table]) -> int:
        from google.cloud import bigquery

        client = self._client()
        written = 0
        for day, rows in sorted(rows_by_day.items()):
            config = bigquery.LoadJobConfig(
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                time_partitioning=bigquery.TimePartitioning(field=PARTITION_COLUMN),
            )
            # The partition decorator makes WRITE_TRUNCATE replace exactly that day.
            destination = f"{self._table_id(table)}${day:%Y%m%d}"
            client.load_table_from_dataframe(
                _with_partition_column(day, rows).to_pandas(), destination, job_config=config
            ).result()
            written += rows.num_rows
        return written

    def replace_table(self, table: str, rows: pa.Table) -> int:
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE)
        self._client().load_table_from_dataframe(rows.to_pandas(), self._table_id(table), job_config=config).result()
        return rows.num_rows

    def row_counts(self, table: str) -> dict[date, int]:
        sql = f"select {PARTITION_COLUMN}, count(*) from `{self._table_id(table)}` group by 1 order by 1"
        return {row[0]: row[1] for row in self._client().query(sql).result()}

    def read_reviews(self, first: date | None, last: date) -> pa.Table:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter("first", "DATE", first or date.min),
            bigquery.ScalarQueryParameter("last", "DATE", last),
        ])
        sql = _reviews_sql(f"`{self._table_id('raw_reviews')}`", "@first", "@last")
        return self._client().query(sql, job_config=config).to_arrow()

    def read_items(self) -> pa.Table:
        return self._client().query(f"select * from `{self._table_id('item_metadata')}`").to_arrow()


def _reviews_sql(table: str, first: str, last: str) -> str:
    # Ordered, so a re-run reads the same rows in the same order (deterministic training).
    return (f"select user_id, parent_asin, rating, timestamp, {PARTITION_COLUMN} from {table} "
            f"where {PARTITION_COLUMN} between {first} and {last} order by timestamp, user_id, parent_asin")
