"""The feature contract (recsys_assets/feature_contract.py) is the one source of windows, lookback, history
length and column names: dbt gets them as vars and its SQL loops over them, Feast and the models build
their names from it, and the Dagster lineage uses its lookback."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys_assets import feature_contract as contract
from recsys_assets.settings import REPO_ROOT

DBT = REPO_ROOT / "dbt_project"
FEATURE_SQL = sorted((DBT / "models" / "features").glob("*.sql"))


def test_dbt_project_defaults_are_the_contract():
    declared = yaml.safe_load((DBT / "dbt_project.yml").read_text())["vars"]
    assert {k: declared[k] for k in contract.dbt_vars()} == contract.dbt_vars()


def test_the_sql_writes_no_contract_value_itself():
    for path in FEATURE_SQL:
        sql = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        for literal in (r"\[7, 30, 90, 365\]", r"\b366\b", r"_90d\b", r"_10_", r"\b90\)", r"- 10\b"):
            assert not re.search(literal, sql), f"{path.name} writes {literal} itself: take it from var(...)"


def _compiled(tmp_path: Path, variables: dict) -> dict[str, str]:
    env = {**os.environ, "RECSYS_HOME": str(tmp_path)}
    out = subprocess.run([str(Path(sys.executable).parent / "dbt"), "compile", "--select", "features",
                          "--target", "duckdb", "--profiles-dir", ".", "--vars", json.dumps(variables),
                          "--target-path", str(tmp_path / "target")], cwd=DBT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    return {p.stem: p.read_text() for p in (tmp_path / "target").rglob("features/*.sql")}


def _columns(sql: str) -> set[str]:
    return set(re.findall(r"\bas (\w+)", sql)) | set(re.findall(r"^\s*t\.(\w+),?$", sql, re.M))


def test_the_compiled_sql_has_the_columns_feast_serves(tmp_path):
    from recsys_assets.feature_store.definitions import FEATURES_BY_VIEW

    compiled = _compiled(tmp_path, {**contract.dbt_vars(), "min_date": "2024-12-31", "max_date": "2025-01-01"})
    for view, fields in FEATURES_BY_VIEW.items():
        assert {f.name for f in fields} <= _columns(compiled[view]), view
    # the item windows read LOOKBACK_DAYS (366) days before the first day: from 2023-12-31 (2024 is a leap year)
    assert "partition_date >= '2023-12-31'" in compiled["parent_asin_rating_stats"]


@pytest.mark.parametrize("variables", [{"feature_windows_days": [3, 14], "user_window_days": 7, "history_length": 5}])
def test_the_sql_follows_other_contract_values(tmp_path, variables):
    """Other values give other columns: the SQL loops over the vars, nothing is written twice."""
    compiled = _compiled(tmp_path, {**contract.dbt_vars(), **variables})
    item, user = _columns(compiled["parent_asin_rating_stats"]), _columns(compiled["user_rating_stats"])
    assert {"parent_asin_rating_cnt_3d", "parent_asin_rating_avg_prev_rating_14d"} <= item
    assert not any("_365d" in column for column in item)
    assert {"user_rating_cnt_7d", "user_rating_list_5_recent_asin", "user_rating_list_5_recent_asin_timestamp"} <= user
    assert "t.events_through - 5" in compiled["user_rating_stats"]


def test_the_lineage_reads_as_far_back_as_the_sql():
    from recsys_assets.defs.shared.partitions import days_up_to

    assert days_up_to().start_offset == -contract.LOOKBACK_DAYS
    assert contract.LOOKBACK_DAYS == max(contract.WINDOWS_DAYS) + 1


def test_the_schema_documents_only_contract_columns():
    from recsys_assets.feature_store.definitions import FEATURES_BY_VIEW

    schema = yaml.safe_load((DBT / "models" / "features" / "schema.yml").read_text())
    for model in schema["models"]:
        served = {f.name for f in FEATURES_BY_VIEW.get(model["name"], [])}
        documented = {c["name"] for c in model.get("columns", [])} - {"user_id", "parent_asin", "timestamp",
                                                                       "partition_date"}
        assert documented <= served, (model["name"], documented - served)


def test_a_contract_change_is_a_new_version_of_the_feature_tables(monkeypatch):
    from recsys_assets.defs.features import assets

    model = {"raw_code": "select 1", "resource_type": "model"}
    before = assets.FeatureTranslator().get_code_version(model)
    assert before == assets.FeatureTranslator().get_code_version(dict(model))  # stable
    monkeypatch.setattr(assets, "contract_vars", lambda: {**contract.dbt_vars(), "history_length": 20})
    assert assets.FeatureTranslator().get_code_version(model) != before
    monkeypatch.undo()
    assert assets.FeatureTranslator().get_code_version({**model, "raw_code": "select 2"}) != before
