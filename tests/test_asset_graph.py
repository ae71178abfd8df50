"""The asset graph as a committed snapshot (tests/snapshots/asset_graph.json): every asset's key, group,
partitions, automation condition, checks, upstream assets and kinds, and the jobs, schedules, sensors and
resources. A change to the graph fails here until the snapshot is rewritten, so it shows in the diff:

    RECSYS_UPDATE_SNAPSHOT=1 pytest tests/test_asset_graph.py
"""

import json
import os

from dagster import AutomationCondition, Definitions

from recsys_assets.settings import REPO_ROOT

SNAPSHOT = REPO_ROOT / "tests" / "snapshots" / "asset_graph.json"


def describe(condition: AutomationCondition | None) -> str | None:
    """A condition by its label, or its kind with its operands' descriptions."""
    if condition is None:
        return None
    label = condition.get_label()
    if label:
        return label
    children = [describe(child) for child in condition.children]
    name = type(condition).__name__.removesuffix("AutomationCondition") or type(condition).__name__
    return f"{name}({', '.join(children)})" if children else name


def graph_snapshot(defs: Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    repository = defs.get_repository_def()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": None if partitions is None else {
                "kind": type(partitions).__name__, "cron": getattr(partitions, "cron_schedule", None)},
            "automation_condition": describe(node.automation_condition),
            "checks": sorted(
                f"{check.name}{' (blocking)' if graph.get_check_spec(check).blocking else ''}"
                for check in node.check_keys),
            "upstream": sorted(parent.to_user_string() for parent in node.parent_keys),
            "kinds": sorted(node.kinds),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repository.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repository.schedule_defs),
        "sensors": sorted(s.name for s in repository.sensor_defs),
        "resources": sorted(defs.resources or {}),
    }


def test_the_asset_graph_matches_its_snapshot():
    from recsys_assets.definitions import defs

    current = graph_snapshot(defs)
    if os.environ.get("RECSYS_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    committed = json.loads(SNAPSHOT.read_text())
    changed = sorted(k for k in {*committed["assets"], *current["assets"]}
                     if committed["assets"].get(k) != current["assets"].get(k))
    assert current == committed, (f"the asset graph changed ({', '.join(changed) or 'jobs/schedules/sensors'}): "
                                  "review, then RECSYS_UPDATE_SNAPSHOT=1 pytest tests/test_asset_graph.py")


def test_every_asset_lives_in_the_folder_of_its_group_and_links_to_its_source():
    """Dagster's layout: recsys_assets/defs/<group>/, loaded by load_from_defs_folder; the UI links each asset
    to the file and line that defines it."""
    from recsys_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        references = node.metadata.get("dagster/code_references")
        assert references is not None, key
        (reference,) = {r.file_path for r in references.code_references}
        folder = REPO_ROOT / "recsys_assets" / "defs" / node.group_name
        assert reference.startswith(str(folder) + os.sep), (key.to_user_string(), reference, node.group_name)
