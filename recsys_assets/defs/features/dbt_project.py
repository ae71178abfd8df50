"""The dbt project as Dagster sees it. Kept alone in this file: `dagster-dbt project prepare-and-package`
imports it to build the manifest, without loading the rest of the code location."""

from pathlib import Path

from dagster_dbt import DbtProject

from recsys_assets.settings import REPO_ROOT

DBT_PROJECT_DIR: Path = REPO_ROOT / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, target="duckdb")
dbt_project.prepare_if_dev()
