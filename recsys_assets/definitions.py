"""The code location: Dagster's defs folder (`recsys_assets/defs/<domain>/`, loaded by `load_from_defs_folder`;
each domain's folder is its asset group, so a new asset is one new function there) plus the resources and the
executor RECSYS_ENV picks (`defs/shared/resources.py`)."""

from pathlib import Path

from dagster import Definitions, load_from_defs_folder, with_source_code_references

from recsys_assets.defs.shared.resources import executor_for, resources_for
from recsys_assets.settings import get_settings

settings = get_settings()


def _definitions() -> Definitions:
    loaded = load_from_defs_folder(path_within_project=Path(__file__).parent)
    # An asset that another module imports is found once per module: the same object, wrapped once.
    assets = list({id(asset): asset for asset in loaded.assets or []}.values())
    return Definitions(
        # Each asset links to its source in the UI (the file and line of its definition).
        assets=with_source_code_references(assets),
        asset_checks=loaded.asset_checks,
        jobs=loaded.jobs,
        schedules=loaded.schedules,
        sensors=loaded.sensors,
        loggers=loaded.loggers,
        metadata=loaded.metadata,
        resources={**(loaded.resources or {}), **resources_for(settings)},
        executor=executor_for(settings),
    )


# The one Definitions object at module scope (Dagster refuses a module with two).
defs = _definitions()
