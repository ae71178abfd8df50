"""dbt features: staging view and the point-in-time feature tables, one run per partition range."""


import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import AssetCheckSpec, AssetExecutionContext, AutomationCondition, BackfillPolicy, PartitionMapping
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from recsys_assets.defs.automation.conditions import FOLLOW_UPSTREAM, RunsWithItsAsset
from recsys_assets.defs.features.dbt_project import dbt_project
from recsys_assets.defs.shared.partitions import daily_partitions, days_up_to
from recsys_assets.feature_contract import dbt_vars as contract_vars


class FeatureTranslator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "features"

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> AutomationCondition | None:
        return FOLLOW_UPSTREAM

    def get_code_version(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """The SQL's version and the feature contract's values it is run with (dbt vars): changing a window
        or the history length is a new version of the tables, as editing the SQL is."""
        sql = super().get_code_version(dbt_resource_props) or ""
        return hashlib.sha1(f"{sql}:{json.dumps(contract_vars(), sort_keys=True)}".encode()).hexdigest()[:16]

    def get_asset_check_spec(self, asset_spec, manifest, unique_id, project) -> AssetCheckSpec | None:
        """dbt tests run in every automated run of their model (the dbt multi-asset can run without them)."""
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        return AssetCheckSpec(spec.name, asset=spec.asset_key, description=spec.description,
                              additional_deps=spec.additional_deps, metadata=spec.metadata, blocking=spec.blocking,
                              automation_condition=RunsWithItsAsset())

    def get_partition_mapping(self, dbt_resource_props: Mapping[str, Any],
                              dbt_parent_resource_props: Mapping[str, Any]) -> PartitionMapping | None:
        if dbt_parent_resource_props.get("resource_type") == "model":  # feature model <- stg_reviews
            return days_up_to()
        return None  # stg_reviews <- raw_reviews: the same day


def dbt_vars(context: AssetExecutionContext) -> dict[str, object]:
    """The partition range as dbt's [min_date, max_date) window, and the feature contract."""
    window = context.partition_time_window
    return {"min_date": window.start.date().isoformat(), "max_date": window.end.date().isoformat(),
            **contract_vars()}


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),  # 200 days = one dbt invocation, not 200
    dagster_dbt_translator=FeatureTranslator(),
    name="dbt_features",
)
def dbt_features(context: AssetExecutionContext, dbt: DbtCliResource):
    # A throwaway target folder per invocation: dbt leaves one behind per run otherwise.
    with tempfile.TemporaryDirectory(prefix="dbt-target-") as target:
        args = ["build", "--vars", json.dumps(dbt_vars(context))]
        yield from dbt.cli(args, context=context, target_path=Path(target)).stream()
