"""Importers: turn real data into the same daily landing files the generator writes.

* Amazon Reviews 2023 JSONL (reviews + meta), plain or gzipped;
* a generic interactions file (CSV/TSV/parquet: user_id, item_id, rating, timestamp) with an optional
  item file (item_id, title, categories or genres); RecBole's atomic files too (`.inter` and `.item`: TSV
  whose headers say `name:type`, e.g. the MovieLens-100k that RecBole's wheel ships). Columns are found by
  their usual names (`COLUMN_ALIASES`) or named by the caller; timestamps may be epoch numbers (seconds to
  nanoseconds, told apart by size) or dates and date-times; ratings on another scale are mapped onto 1..5
  (`rating_scale`), and a file without ratings (implicit feedback: plays, clicks, purchases) imports with
  `implicit=True`.

DuckDB does the heavy lifting (streaming JSON/CSV readers, out-of-core sort), so files larger than memory
import fine. Rows that cannot be valid reviews (missing keys, rating outside 1..5) and exact duplicates
are dropped and counted in the returned report, never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb

from recsys_assets.data.landing import LandingZone
from recsys_assets.data.schema import ITEM_SCHEMA, ITEMS_FILE, REVIEW_SCHEMA, review_file_name

# An epoch column's unit, from its largest value: below 1e11 it is seconds (1e11 s is the year 5138; 1e11 ms is
# 1973), below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds. The unit's milliseconds per tick.
EPOCH_UNITS = ((1e11, "s", 1000.0), (1e14, "ms", 1.0), (1e17, "us", 1e-3), (float("inf"), "ns", 1e-6))
DATETIME = "datetime"  # the unit reported for dates and date-times (parsed as UTC)
COLUMN_ALIASES = {
    "user_id": ["user_id", "userid", "user", "reviewerid", "reviewer_id", "customer_id", "customerid",
                "visitorid", "uid"],
    "item_id": ["item_id", "itemid", "item", "movieid", "parent_asin", "asin", "product_id", "productid",
                "article_id", "book_id", "business_id", "track_id", "song_id", "iid", "sku"],
    "rating": ["rating", "score", "overall", "stars", "review_score"],
    "timestamp": ["timestamp", "ts", "time", "unixreviewtime", "event_time", "date", "datetime", "created_at",
                  "t_dat"],
}
IMPLICIT_RATING = 5.0  # what an interaction of a file without ratings is recorded with: a positive


@dataclass
class ImportReport:
    days: list[date] = field(default_factory=list)
    days_without_reviews: int = 0
    reviews: int = 0
    items: int = 0
    dropped_invalid: int = 0
    dropped_duplicates: int = 0
    timestamp_unit: str = "ms"

    def summary(self) -> str:
        span = f"{self.days[0]}..{self.days[-1]}" if self.days else "no days"
        return (
            f"{self.reviews} reviews over {len(self.days)} days ({span}; {self.days_without_reviews} without "
            f"reviews), {self.items} items; "
            f"timestamps in {self.timestamp_unit}; dropped {self.dropped_invalid} invalid rows "
            f"and {self.dropped_duplicates} duplicates"
        )


def _reader(path: Path) -> str:
    name = path.name.lower()
    quoted = "'" + str(path).replace("'", "''") + "'"
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return f"read_json({quoted}, format='newline_delimited', sample_size=-1, union_by_name=true)"
    if name.endswith((".parquet", ".pq")):
        return f"read_parquet({quoted})"
    if name.endswith((".tsv", ".tsv.gz", ".inter", ".item")):
        return f"read_csv({quoted}, delim='\\t', header=true)"
    if name.endswith((".csv", ".csv.gz", ".dat", ".txt")):
        return f"read_csv({quoted}, header=true)"
    raise ValueError(f"unsupported file type: {path.name} (use .jsonl[.gz], .csv[.gz], .tsv[.gz] or .parquet)")


def _plain(column: str) -> str:
    """A column's name to match: lower case, without an atomic file's `:type` (`user_id:token` -> user_id)."""
    return column.lower().split(":")[0]


def _resolve_columns(con: duckdb.DuckDBPyConnection, source: str, wanted: dict[str, list[str]],
                     named: dict[str, str] | None = None, advice: str = "") -> dict[str, str]:
    """Each wanted column's name in the file: the one `named` gives, else the first alias present; `advice`
    ends the error that lists those missing."""
    present = {_plain(c): c for c in con.execute(f"select * from {source} limit 0").fetchdf().columns}
    resolved, missing = {}, []
    for target, aliases in wanted.items():
        given = (named or {}).get(target)
        if given is not None:
            match = present.get(_plain(given))
            if match is None:
                raise ValueError(f"no column {given!r} (given for {target}); found {sorted(present.values())}")
        else:
            match = next((present[a] for a in aliases if a in present), None)
        if match is None:
            missing.append(target)
        else:
            resolved[target] = match
    if missing:
        raise ValueError(f"missing columns {missing}; found {sorted(present.values())}{advice}")
    return resolved


def _epoch_milliseconds(con: duckdb.DuckDBPyConnection, source: str, column: str) -> tuple[str, str]:
    """(SQL giving the column as epoch milliseconds, the unit read). Numbers (or text that is all numbers) are
    epoch seconds, milliseconds, microseconds or nanoseconds by their size; dates, date-times and text that
    parses as one are read as UTC. A value that is neither becomes NULL: an invalid row, dropped and counted."""
    quoted = f'"{column}"'
    (dtype,) = con.execute(f"select typeof({quoted}) from {source} limit 1").fetchone() or ("VARCHAR",)
    if dtype.startswith(("DATE", "TIMESTAMP")):
        return f"epoch_ms(cast({quoted} as timestamp))", DATETIME
    number = f"try_cast({quoted} as double)"
    (texts, numbers, top) = con.execute(
        f"select count({quoted}), count({number}), max(abs({number})) from {source}").fetchone()
    if numbers * 2 <= texts:  # mostly not numbers: dates or date-times written as text
        return f"epoch_ms(try_cast({quoted} as timestamp))", DATETIME
    unit, per_tick = next((name, ms) for limit, name, ms in EPOCH_UNITS if (top or 0) < limit)
    return f"cast(round({number} * {per_tick}) as bigint)", unit


def _rating_expression(column: str | None, implicit: bool, scale: tuple[float, float] | None) -> str:
    """The rating on 1..5: as given, mapped linearly from `scale` (low, high), or IMPLICIT_RATING without one."""
    if column is None or implicit:
        return f"cast({IMPLICIT_RATING} as double)"
    rating = f'try_cast("{column}" as double)'
    if scale is None:
        return rating
    low, high = scale
    if not high > low:
        raise ValueError(f"rating scale {low}..{high}: the highest rating must be above the lowest")
    # Values off the scale stay off 1..5, so they are dropped as invalid as before, not folded in.
    return f"1 + ({rating} - {low}) * 4.0 / ({high} - {low})"


def _write_days(con: duckdb.DuckDBPyConnection, zone: LandingZone, report: ImportReport) -> None:
    """Split the clean `reviews` table into one landing file per UTC day, every day from the first to the last:
    a day without reviews gets a file without rows. History has such days (a shop's early years); written out,
    the days form one range that one run loads, where gaps would cost a run per stretch of days (a 3-year
    Amazon-like file with sparse early months: 72 runs of ~30 s)."""
    columns = ", ".join(f'"{c}"' for c in REVIEW_SCHEMA.names)
    con.execute(
        f"create table by_day as select {columns}, "
        "cast(to_timestamp(timestamp / 1000) at time zone 'UTC' as date) as day "
        "from reviews order by timestamp, user_id, parent_asin"
    )
    with_reviews = [row[0] for row in con.execute("select distinct day from by_day order by day").fetchall()]
    days = [with_reviews[0] + timedelta(days=d) for d in range((with_reviews[-1] - with_reviews[0]).days + 1)
            ] if with_reviews else []
    for day in days:
        table = con.sql(f"select {columns} from by_day where day = $day order by timestamp, user_id, parent_asin",
                        params={"day": day}).to_arrow_table()
        zone.write_parquet(review_file_name(day), table.cast(REVIEW_SCHEMA))
    report.days = days
    report.days_without_reviews = len(days) - len(with_reviews)
    report.reviews = con.execute("select count(*) from by_day").fetchone()[0]


def _clean_reviews(con: duckdb.DuckDBPyConnection, report: ImportReport) -> None:
    """From `staged` (REVIEW_SCHEMA columns) to `reviews`: valid rows, no exact duplicates."""
    total = con.execute("select count(*) from staged").fetchone()[0]
    con.execute(
        "create table valid as select * from staged where user_id is not null and parent_asin is not null "
        "and timestamp is not null and rating between 1 and 5"
    )
    valid = con.execute("select count(*) from valid").fetchone()[0]
    con.execute(
        "create table reviews as select * from valid "
        "qualify row_number() over (partition by user_id, parent_asin, timestamp order by rating desc, text) = 1"
    )
    report.dropped_invalid = total - valid
    report.dropped_duplicates = valid - con.execute("select count(*) from reviews").fetchone()[0]


def _write_items(con: duckdb.DuckDBPyConnection, zone: LandingZone, report: ImportReport) -> None:
    items = con.sql("select * from items order by parent_asin").to_arrow_table()
    zone.write_parquet(ITEMS_FILE, items.select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA))
    report.items = items.num_rows


def import_amazon2023(reviews_path: Path, meta_path: Path, zone: LandingZone) -> ImportReport:
    """Amazon Reviews 2023 JSONL: reviews (rating, title, text, images, asin, parent_asin, user_id,
    timestamp, helpful_vote, verified_purchase) and meta (parent_asin, main_category, title, features,
    description, price, categories, store, images)."""
    report = ImportReport()
    con = duckdb.connect()
    con.execute(f"create table src as select * from {_reader(Path(reviews_path))}")
    cols = {c.lower() for c in con.execute("select * from src limit 0").fetchdf().columns}
    has = lambda c: c in cols  # noqa: E731
    image_expr = "list_transform(images, lambda x: coalesce(x.large_image_url, x.medium_image_url, x.small_image_url))" \
        if has("images") and _is_struct_list(con, "src", "images") else "cast([] as varchar[])"
    con.execute(
        f"""create table staged as select
            cast(user_id as varchar) as user_id,
            cast(parent_asin as varchar) as parent_asin,
            cast({'asin' if has('asin') else 'parent_asin'} as varchar) as asin,
            try_cast(rating as double) as rating,
            try_cast(timestamp as bigint) as timestamp,
            cast({'title' if has('title') else 'null'} as varchar) as title,
            cast({'text' if has('text') else 'null'} as varchar) as text,
            coalesce(try_cast({'helpful_vote' if has('helpful_vote') else 'null'} as bigint), 0) as helpful_vote,
            coalesce(try_cast({'verified_purchase' if has('verified_purchase') else 'null'} as boolean), false)
                as verified_purchase,
            {image_expr} as images
        from src"""
    )
    _clean_reviews(con, report)
    _write_days(con, zone, report)

    con.execute(f"create table meta as select * from {_reader(Path(meta_path))}")
    mcols = {c.lower() for c in con.execute("select * from meta limit 0").fetchdf().columns}
    meta_image = "list_extract(list_transform(images, lambda x: coalesce(x.large, x.thumb, x.hi_res)), 1)" \
        if "images" in mcols and _is_struct_list(con, "meta", "images") else "null"
    col = lambda c, default="null": c if c in mcols else default  # noqa: E731
    con.execute(
        f"""create table items as select
            cast(parent_asin as varchar) as parent_asin,
            cast({col('main_category')} as varchar) as main_category,
            cast({col('title')} as varchar) as title,
            cast({col('features', '[]')} as varchar[]) as features,
            array_to_string(cast({col('description', '[]')} as varchar[]), ' ') as description,
            try_cast(regexp_replace(cast({col('price')} as varchar), '[^0-9.]', '', 'g') as double) as price,
            cast({col('categories', '[]')} as varchar[]) as categories,
            cast({col('store')} as varchar) as store,
            cast({meta_image} as varchar) as image_url
        from meta where parent_asin is not null
        qualify row_number() over (partition by parent_asin) = 1"""
    )
    _write_items(con, zone, report)
    con.close()
    return report


def _is_struct_list(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    (dtype,) = con.execute(
        "select data_type from information_schema.columns where table_name = ? and column_name = ?", [table, column]
    ).fetchone()
    return dtype.startswith("STRUCT") and dtype.endswith("[]")


def import_interactions(path: Path, zone: LandingZone, items_path: Path | None = None,
                        columns: dict[str, str] | None = None, implicit: bool = False,
                        rating_scale: tuple[float, float] | None = None) -> ImportReport:
    """user_id, item_id, rating, timestamp; items optional. `columns`: the file's name for any of those four
    where it is not one of `COLUMN_ALIASES`; `implicit`: the file has no ratings (each interaction is recorded
    as a positive, `IMPLICIT_RATING`); `rating_scale`: (lowest, highest) of the file's rating scale, mapped
    linearly onto 1..5 (MovieLens' half stars: (0.5, 5); ten points: (1, 10))."""
    report = ImportReport()
    con = duckdb.connect()
    source = _reader(Path(path))
    wanted = {k: v for k, v in COLUMN_ALIASES.items() if not (implicit and k == "rating")}
    cols = _resolve_columns(con, source, wanted, columns, advice=(
        ": name them (`columns`; on the command line `--user-column` ...); a file without ratings (implicit "
        "feedback) imports with `implicit` (`--implicit`)"))
    kept = ", ".join(f'"{c}"' for c in dict.fromkeys(cols.values()))  # only these: a file may carry much more
    con.execute(f"create table src as select {kept} from {source}")
    timestamp, report.timestamp_unit = _epoch_milliseconds(con, "src", cols["timestamp"])
    con.execute(
        f"""create table staged as select cast("{cols['user_id']}" as varchar) as user_id,
            cast("{cols['item_id']}" as varchar) as parent_asin, cast("{cols['item_id']}" as varchar) as asin,
            {_rating_expression(cols.get('rating'), implicit, rating_scale)} as rating,
            {timestamp} as timestamp, cast(null as varchar) as title, cast(null as varchar) as text,
            cast(0 as bigint) as helpful_vote, false as verified_purchase, cast([] as varchar[]) as images
        from src"""
    )
    _clean_reviews(con, report)
    _write_days(con, zone, report)

    if items_path is not None:
        _stage_item_file(con, Path(items_path))
    else:
        con.execute("create table item_src as select distinct parent_asin, parent_asin as title, "
                    "cast([] as varchar[]) as genre_list from reviews")
    con.execute(
        """create table items as select parent_asin, coalesce(genre_list[1], 'unknown') as main_category, title,
            cast([] as varchar[]) as features, cast(null as varchar) as description, cast(null as double) as price,
            genre_list as categories, cast(null as varchar) as store, cast(null as varchar) as image_url
        from item_src where parent_asin is not null qualify row_number() over (partition by parent_asin) = 1"""
    )
    _write_items(con, zone, report)
    con.close()
    return report


def _stage_item_file(con: duckdb.DuckDBPyConnection, items_path: Path) -> None:
    source = _reader(items_path)
    cols = _resolve_columns(con, source, {"item_id": COLUMN_ALIASES["item_id"],
                                          "title": ["title", "name", "movie_title"]})
    described = con.execute(f"describe select * from {source}").fetchall()
    types = {_plain(name): (name, dtype) for name, dtype, *_ in described}
    genre = next((types[c] for c in ("categories", "genres", "category", "genre", "class") if c in types), None)
    # Genres come as a list, or as one string separated by | or , (MovieLens writes "Action|Comedy"), or by
    # spaces in an atomic file's token_seq ("Animation Children's Comedy").
    separators = "[ ]" if genre is not None and genre[0].lower().endswith(":token_seq") else "[|,]"
    if genre is None:
        genres = "cast([] as varchar[])"
    elif genre[1].endswith("[]"):
        genres = f'cast("{genre[0]}" as varchar[])'
    else:
        genres = (f"""list_filter(list_transform(regexp_split_to_array(cast("{genre[0]}" as varchar), """
                  f"""'{separators}'), lambda g: trim(g)), lambda g: g <> '')""")
    con.execute(
        f"""create table item_src as select cast("{cols['item_id']}" as varchar) as parent_asin,
            cast("{cols['title']}" as varchar) as title, {genres} as genre_list from {source}"""
    )

