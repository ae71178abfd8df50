"""The feature contract, written once: what the dbt SQL computes, Feast serves, the models read and serving
looks up. dbt gets these values as vars (`dbt_vars`; dbt_project.yml holds the same defaults for dbt on its
own, and tests/test_feature_contract.py proves the SQL and this module agree). Plain Python: no dagster here.
"""

from __future__ import annotations

# Item rating counts and averages over these windows (parent_asin_rating_stats).
WINDOWS_DAYS = (7, 30, 90, 365)
# The user's rating count and average over one window (user_rating_stats).
USER_WINDOW_DAYS = 90
# How far back a day's feature rows read: the longest window and the day itself. The Dagster lineage of the
# feature tables (a replaced day refreshes the days after it) is declared with the same number.
LOOKBACK_DAYS = max(WINDOWS_DAYS) + 1
# A user's most recent items (and their times), oldest first: the two-tower's and the ranker's history.
HISTORY_LENGTH = 10
RECENT_ITEMS = f"user_rating_list_{HISTORY_LENGTH}_recent_asin"
RECENT_ITEMS_TIMESTAMPS = f"{RECENT_ITEMS}_timestamp"

# Qdrant aliases of the index assets: serving reads the collection behind each.
INDEX_ALIASES = {"two_tower_index": "two_tower_items", "item2vec_index": "item2vec_items",
                 "tag_index": "tag_embeddings"}
TWO_TOWER_ITEMS = INDEX_ALIASES["two_tower_index"]
ITEM2VEC_ITEMS = INDEX_ALIASES["item2vec_index"]


def item_window_columns(days: int) -> tuple[str, str]:
    """The count and average columns of one item window."""
    return f"parent_asin_rating_cnt_{days}d", f"parent_asin_rating_avg_prev_rating_{days}d"


USER_COLUMNS = (f"user_rating_cnt_{USER_WINDOW_DAYS}d", f"user_rating_avg_prev_rating_{USER_WINDOW_DAYS}d")


def dbt_vars() -> dict[str, object]:
    """The contract as dbt vars (the names dbt_project.yml declares)."""
    return {"feature_windows_days": list(WINDOWS_DAYS), "user_window_days": USER_WINDOW_DAYS,
            "feature_lookback_days": LOOKBACK_DAYS, "history_length": HISTORY_LENGTH}
