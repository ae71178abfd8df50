"""The code location loads under both targets, offline; layers hold; automation carries new data on."""

import ast
import os
import subprocess
import sys

import pytest
from dagster import AssetKey

from recsys_assets.settings import REPO_ROOT

LOAD = (
    "from dagster import Definitions; import recsys_assets.definitions as d; "
    "Definitions.validate_loadable(d.defs); "
    "r = d.defs.get_repository_def(); "
    "print(sorted(k.to_user_string() for k in r.asset_graph.get_all_asset_keys())); "
    "print(sorted(d.defs.resources)); "
    "print(repr(d.defs.executor.name))"
)


# Loading with the local resources is `make validate-defs` (and every test here); gcp's also in a fresh process.
@pytest.mark.parametrize("env", ["gcp"])
def test_definitions_load(env, tmp_path):
    environment = {**os.environ, "RECSYS_ENV": env, "RECSYS_HOME": str(tmp_path), "RECSYS_GCP_PROJECT": "example-project",
                   # No credentials and no route out: loading must not touch the network.
                   "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"), "NO_PROXY": "*"}
    out = subprocess.run([sys.executable, "-c", LOAD], env=environment, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for key in ("raw_reviews", "item_metadata", "stg_reviews", "user_rating_stats", "parent_asin_rating_stats",
                "feast_definitions", "online_features", "two_tower_index", "u2i_candidates", "serving_release",
                "landed_interactions"):
        assert f"'{key}'" in out.stdout
    assert "'feature_store'" in out.stdout and "'serving'" in out.stdout
    if env == "gcp":  # the warehouse is BigQuery, the landing zone a bucket, training joins Ray on GKE
        assert "'warehouse'" in out.stdout and "'landing'" in out.stdout and "'k8s'" in out.stdout


def test_loading_the_code_location_reads_no_state(tmp_path):
    """Importing and loading the definitions opens nothing under RECSYS_HOME: what the graph looks like
    (partitions included) is configuration, not a file some earlier command left there."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dataset.json").write_text('{"first_day": "2023-01-01"}')  # what imports wrote, partitions read
    watch = (f"import sys; opened = []; sys.addaudithook(lambda event, args: opened.append(str(args[0])) "
             f"if event == 'open' and str(args[0]).startswith({str(home)!r}) else None); ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    out = subprocess.run([sys.executable, "-c", watch + LOAD + "; print('opened', opened)"],
                         env={**env, "RECSYS_HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "opened []" in out.stdout, out.stdout[-2000:]


def test_feast_assets_come_after_the_dbt_models():
    from recsys_assets.definitions import defs

    graph = defs.get_repository_def().asset_graph
    parents = {k.to_user_string() for k in graph.get(AssetKey("online_features")).parent_keys}
    assert parents == {"feast_definitions", "user_rating_stats", "parent_asin_rating_stats"}


ORCHESTRATION = {"defs", "definitions.py", "cli.py"}
# Reads the Dagster instance for Prometheus (`recsys pipeline-exporter`); defines no Dagster objects, so it
# lives outside the defs folder, which is loaded as definitions.
ORCHESTRATION_MODULES = {"observability/pipeline_exporter.py"}


def _imports(path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_library_code_never_imports_dagster():
    package = REPO_ROOT / "recsys_assets"
    offenders = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] in ORCHESTRATION or \
                path.relative_to(package).as_posix() in ORCHESTRATION_MODULES:
            continue
        offenders += [f"{path.relative_to(package)}: {n}" for n in _imports(path) if n.split(".")[0].startswith("dagster")]
    assert offenders == []


def test_serving_never_imports_the_orchestration_layer():
    package = REPO_ROOT / "recsys_assets"
    files = [path for folder in ("serving", "serving_data") for path in (package / folder).rglob("*.py")]
    offenders = [f"{path.name}: {n}" for path in files
                 for n in _imports(path) if n.startswith(("recsys_assets.defs", "recsys_assets.definitions", "dagster"))]
    assert offenders == []


def test_new_raw_partition_flows_to_features_and_online_store_by_automation(featured_home):
    """A raw partition whose checks passed makes automation request the dbt features and the online store
    for that day, and nothing else."""
    from dagster import Definitions, evaluate_automation_conditions

    from recsys_assets.defs.feature_store.assets import feast_definitions, online_features
    from recsys_assets.defs.features.assets import dbt_features
    from recsys_assets.defs.ingest.assets import item_metadata, raw_reviews

    home = featured_home
    defs = Definitions(assets=[raw_reviews, item_metadata, dbt_features, feast_definitions, online_features],
                       resources=home.resources())
    result = evaluate_automation_conditions(defs=defs, instance=home.instance)
    # Everything is up to date after the session's pipeline run: nothing requested.
    assert result.total_requested == 0

    day = str(home.days[-1])
    home.materialize([raw_reviews], day)
    result = evaluate_automation_conditions(defs=defs, instance=home.instance, cursor=result.cursor)
    requested = {r.key.to_user_string(): r.true_subset for r in result.results
                 if r.true_subset.size and isinstance(r.key, AssetKey)}
    # One tick requests the whole chain below the new partition (dagster runs it in dependency order).
    assert set(requested) == {"stg_reviews", "user_rating_stats", "parent_asin_rating_stats", "online_features"}
    assert list(requested["online_features"].get_internal_subset_value().get_partition_keys()) == [day]
