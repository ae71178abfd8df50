"""The code location loads under both targets, offline; layers hold; automation carries new data on."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_assets.settings import REPO_ROOT

LOAD = (
    "from dagster import Definitions; import recsys_assets.definitions as d; "
    "Definitions.validate_loadable(d.defs); "
    "r = d.defs.get_repository_def(); "
    "print(sorted(k.to_user_string() for k in r.asset_graph.get_all_asset_keys())); "
    "print(sorted(d.defs.resources))"
)


@pytest.mark.parametrize("env", ["local", "gcp"])
def test_definitions_load(env, tmp_path):
    environment = {**os.environ, "RECSYS_ENV": env, "RECSYS_HOME": str(tmp_path),
                   # No credentials and no route out: loading must not touch the network.
                   "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"), "NO_PROXY": "*"}
    out = subprocess.run([sys.executable, "-c", LOAD], env=environment, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for key in ("raw_reviews", "item_metadata", "stg_reviews", "user_rating_stats", "parent_asin_rating_stats"):
        assert f"'{key}'" in out.stdout
    if env == "gcp":
        assert "'bigquery'" in out.stdout and "'gcs'" in out.stdout


ORCHESTRATION = {"defs", "definitions.py", "cli.py"}


def test_library_code_never_imports_dagster():
    package = REPO_ROOT / "recsys_assets"
    offenders = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] in ORCHESTRATION:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(package)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []


def test_new_raw_partition_triggers_dbt_features_by_automation(generated_home):
    """After raw_reviews lands a partition (checks passed), automation requests the dbt features for it."""
    from dagster import Definitions, evaluate_automation_conditions

    from recsys_assets.defs.features import dbt_features
    from recsys_assets.defs.ingest import item_metadata, raw_reviews

    home = generated_home
    defs = Definitions(assets=[raw_reviews, item_metadata, dbt_features], resources=home.resources())
    result = evaluate_automation_conditions(defs=defs, instance=home.instance)
    first = {k.to_user_string(): v for k, v in ((r.key, r.true_subset.size) for r in result.results)}
    # Everything is up to date after the session's pipeline run: nothing requested.
    assert first.get("user_rating_stats", 0) == 0

    home.materialize([raw_reviews], str(home.days[-1]))
    result = evaluate_automation_conditions(defs=defs, instance=home.instance, cursor=result.cursor)
    requested = {r.key.to_user_string(): r.true_subset for r in result.results if r.true_subset.size}
    assert "user_rating_stats" in requested and "parent_asin_rating_stats" in requested
    assert "raw_reviews" not in requested
