"""Where Prometheus finds a local process: a file_sd file `RECSYS_HOME/observability/targets/<name>.json`
(`[{"targets": ["127.0.0.1:<port>"], "labels": {"job": "<job>"}}]`) that the process writes while it runs and
removes when it stops (`make observe` points Prometheus' file_sd_configs at the folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def target_path(home: Path, name: str) -> Path:
    return Path(home) / "observability" / "targets" / f"{name}.json"


def write_target(home: Path, name: str, address: str, job: str) -> Path:
    """Written whole (a temporary file renamed): Prometheus watches the folder and never reads half a file."""
    path = target_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps([{"targets": [address], "labels": {"job": job}}]))
    os.replace(partial, path)
    return path


def remove_target(home: Path, name: str) -> None:
    target_path(home, name).unlink(missing_ok=True)
