"""Validation of landed data: what the blocking checks on raw partitions evaluate.

Each check returns a CheckOutcome with a message a person can act on; nothing here raises on bad data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pyarrow as pa

from recsys_assets.data.schema import ITEM_SCHEMA, MS_PER_DAY, REVIEW_SCHEMA, day_start_ms


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    message: str
    metadata: dict = field(default_factory=dict)


REVIEW_CHECKS = {
    "schema": "expected columns with expected types",
    "not_emptied": "an empty file never replaces a day already loaded with reviews",
    "non_null_keys": "user_id, parent_asin and timestamp are never null",
    "rating_in_range": "rating is between 1 and 5",
    "no_duplicates": "no two rows share (user_id, parent_asin, timestamp)",
    "timestamps_in_partition": "every timestamp lies inside the partition's UTC day",
}
ITEM_CHECKS = {
    "schema": "expected columns with expected types",
    "unique_parent_asin": "parent_asin is present and unique",
    "price_non_negative": "price is null or >= 0",
}


def _type_family(dtype: pa.DataType) -> str:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"list<{_type_family(dtype.value_type)}>"
    if pa.types.is_null(dtype):
        return "null"
    return str(dtype)


def _accepts(expected: pa.DataType, actual: pa.DataType) -> bool:
    want, got = _type_family(expected), _type_family(actual)
    # Integers widen to floats (a rating of 5 is 5.0); an all-null column fits any type.
    return got == want or got == "null" or (want == "float" and got == "integer")


def check_schema(table: pa.Table, schema: pa.Schema) -> CheckOutcome:
    missing = [f.name for f in schema if f.name not in table.column_names]
    wrong = {
        f.name: f"{_type_family(table.schema.field(f.name).type)} (expected {_type_family(f.type)})"
        for f in schema
        if f.name in table.column_names and not _accepts(f.type, table.schema.field(f.name).type)
    }
    extra = [c for c in table.column_names if c not in schema.names]
    problems = ([f"missing columns {missing}"] if missing else []) + ([f"wrong types {wrong}"] if wrong else [])
    message = "; ".join(problems) if problems else "all expected columns present with expected types"
    if extra:
        message += f"; extra columns ignored: {extra}"
    return CheckOutcome("schema", not problems, message, {"missing": missing, "wrong_types": wrong, "extra": extra})


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly the schema's columns and types (call after check_schema passed).

    Nullability is left to the checks: a null key is a check failure with a message, not a cast error."""
    return table.select(schema.names).cast(pa.schema([f.with_nullable(True) for f in schema]))


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> int:
    return con.execute(sql, params or []).fetchone()[0]


def validate_review_day(day: date, table: pa.Table | None, read_error: str | None = None,
                        loaded_rows: int = 0) -> list[CheckOutcome]:
    """Every review check for one day's landing file (`validate_review_days` for one day)."""
    return validate_review_days({day: (table, read_error)}, {day: loaded_rows})[day]


def validate_review_days(files: dict[date, tuple[pa.Table | None, str | None]],
                         loaded_rows: dict[date, int] | None = None) -> dict[date, list[CheckOutcome]]:
    """Every review check for each day's landing file: `files` maps a day to (its table, None), or (None, why
    it could not be read); `loaded_rows`: each day's rows loaded now.

    A file without rows is a day without reviews (imported history has such days: a shop's early years), so it
    loads as an empty day; but it never replaces a day that holds reviews: a truncated re-export would lose
    them. The days are counted in one query: imported history can be thousands of days (twenty years of
    reviews: 7,300 files), where a query per day cost ~20 ms each."""
    loaded_rows = loaded_rows or {}
    outcomes, readable = {}, {}
    for day, (table, read_error) in files.items():
        if table is None:
            reason = f"landing file for {day} unreadable: {read_error}"
            outcomes[day] = [CheckOutcome(name, False, reason if name == "schema" else f"not evaluated: {reason}")
                             for name in REVIEW_CHECKS]
            continue
        schema = check_schema(table, REVIEW_SCHEMA)
        if not schema.passed:
            outcomes[day] = [schema] + [CheckOutcome(name, False, f"not evaluated: schema check failed "
                                                                  f"({schema.message})")
                                        for name in REVIEW_CHECKS if name != "schema"]
            continue
        readable[day] = (schema, conform(table, REVIEW_SCHEMA))
    counts = _count_problems_by_day({day: rows for day, (_, rows) in readable.items()})
    for day, (schema, rows) in readable.items():
        n, null_keys, bad_rating, duplicates, outside = rows.num_rows, *counts.get(day, (0, 0, 0, 0))
        loaded = loaded_rows.get(day, 0)
        outcomes[day] = [
            schema,
            CheckOutcome("not_emptied", n > 0 or loaded == 0,
                         f"{n} rows" if n else (f"landing file for {day} has no rows; the {loaded} loaded are kept"
                                                if loaded else f"{day} has no reviews (a day without reviews)"),
                         {"rows": n, "loaded_rows": loaded}),
            CheckOutcome("non_null_keys", null_keys == 0, f"{null_keys} rows with a null or empty key",
                         {"rows": null_keys}),
            CheckOutcome("rating_in_range", bad_rating == 0, f"{bad_rating} ratings null or outside 1..5",
                         {"rows": bad_rating}),
            CheckOutcome("no_duplicates", duplicates == 0,
                         f"{duplicates} duplicate (user_id, parent_asin, timestamp) rows", {"rows": duplicates}),
            CheckOutcome("timestamps_in_partition", outside == 0, f"{outside} timestamps outside {day} (UTC)",
                         {"rows": outside}),
        ]
    return {day: outcomes[day] for day in files}


def _count_problems_by_day(tables: dict[date, pa.Table]) -> dict[date, tuple[int, int, int, int]]:
    """Per day with rows: (rows with a null or empty key, ratings null or off 1..5, duplicate rows, timestamps
    outside the day)."""
    by_start = {day_start_ms(day): day for day, table in tables.items() if table.num_rows}
    if not by_start:
        return {}
    rows = pa.concat_tables([
        tables[day].select(["user_id", "parent_asin", "rating", "timestamp"]).append_column(
            "day_start", pa.array(np.full(tables[day].num_rows, start, dtype=np.int64)))
        for start, day in by_start.items()])
    con = duckdb.connect()
    con.register("day_rows", rows)
    found = con.execute(f"""
        with duplicates as (
            select day_start, sum(c - 1) as duplicates from (
                select day_start, count(*) as c from day_rows group by day_start, user_id, parent_asin, timestamp
                having count(*) > 1) group by day_start)
        select day_start,
            count(*) filter (where user_id is null or parent_asin is null or timestamp is null or user_id = ''
                             or parent_asin = ''),
            count(*) filter (where rating is null or rating < 1 or rating > 5),
            coalesce(any_value(d.duplicates), 0),
            count(*) filter (where timestamp < day_start or timestamp >= day_start + {MS_PER_DAY})
        from day_rows left join duplicates d using (day_start)
        group by day_start""").fetchall()
    con.close()
    return {by_start[start]: tuple(int(v) for v in values) for start, *values in found}


def validate_items(table: pa.Table | None, read_error: str | None = None) -> list[CheckOutcome]:
    if table is None:
        return [CheckOutcome(name, False, f"item file unreadable: {read_error}") for name in ITEM_CHECKS]
    schema = check_schema(table, ITEM_SCHEMA)
    if not schema.passed:
        return [schema] + [CheckOutcome(name, False, "not evaluated: schema check failed")
                           for name in ITEM_CHECKS if name != "schema"]
    con = duckdb.connect()
    con.register("items", conform(table, ITEM_SCHEMA))
    bad_keys = _count(con, "select count(*) - count(distinct parent_asin) from items")  # nulls count as bad
    negative = _count(con, "select count(*) from items where price < 0")
    con.close()
    return [
        schema,
        CheckOutcome("unique_parent_asin", bad_keys == 0, f"{bad_keys} null or repeated parent_asin", {"rows": bad_keys}),
        CheckOutcome("price_non_negative", negative == 0, f"{negative} negative prices", {"rows": negative}),
    ]


def merge_outcomes(per_day: dict[date, list[CheckOutcome]]) -> list[CheckOutcome]:
    """One outcome per check over several days; a failure names the days it failed on."""
    merged = []
    for name in REVIEW_CHECKS:
        results = {day: next(o for o in outcomes if o.name == name) for day, outcomes in per_day.items()}
        failed = {day: o for day, o in results.items() if not o.passed}
        if failed:
            message = "; ".join(f"{day}: {o.message}" for day, o in sorted(failed.items()))
        else:
            message = f"passed on {len(results)} day(s)" if len(results) > 1 else next(iter(results.values())).message
        merged.append(CheckOutcome(name, not failed, message, {"failed_days": [str(d) for d in sorted(failed)]}))
    return merged
