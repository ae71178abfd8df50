"""What an asset's latest materialization of the same partition recorded: how assets read another's outputs
(the MLflow version a model asset registered, the version a candidate asset wrote)."""

from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, Failure


def latest_version(context: AssetExecutionContext, asset_name: str) -> str:
    """The MLflow version the latest materialization of `asset_name` for this partition registered."""
    return recorded_metadata(context, asset_name, "mlflow_version")


def recorded_metadata(context: AssetExecutionContext, asset_name: str, key: str, required: bool = True) -> str | None:
    """Metadata `key` of the latest materialization of `asset_name` for this partition; a Failure when there
    is none (None instead when not required)."""
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset_name), asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records or key not in records[0].asset_materialization.metadata:
        if not required:
            return None
        raise Failure(f"{asset_name} has no materialization for {context.partition_key}: materialize it first")
    return str(records[0].asset_materialization.metadata[key].value)
