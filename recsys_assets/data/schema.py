"""The Amazon Reviews 2023 schema as it lands, and the landing file naming convention."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import pyarrow as pa

REVIEW_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("parent_asin", pa.string(), nullable=False),
        pa.field("asin", pa.string()),
        pa.field("rating", pa.float64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),  # milliseconds since epoch, UTC
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("helpful_vote", pa.int64()),
        pa.field("verified_purchase", pa.bool_()),
        pa.field("images", pa.list_(pa.string())),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("parent_asin", pa.string(), nullable=False),
        pa.field("main_category", pa.string()),
        pa.field("title", pa.string()),
        pa.field("features", pa.list_(pa.string())),
        pa.field("description", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("categories", pa.list_(pa.string())),
        pa.field("store", pa.string()),
        pa.field("image_url", pa.string()),
    ]
)

REVIEW_FILE_PREFIX = "recsys_data_upto_"
ITEMS_FILE = "recsys_items.parquet"
_REVIEW_FILE = re.compile(r"^recsys_data_upto_(\d{4})_(\d{2})_(\d{2})\.parquet$")
MS_PER_DAY = 86_400_000


def review_file_name(day: date) -> str:
    return f"{REVIEW_FILE_PREFIX}{day:%Y_%m_%d}.parquet"


def day_of_review_file(name: str) -> date | None:
    """The day a landing file holds, or None when the name is not a daily review file."""
    match = _REVIEW_FILE.match(name)
    return date(*map(int, match.groups())) if match else None


def day_start_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def day_of_ms(timestamp_ms: int) -> date:
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).date()
