"""Where the MLflow tracking store and registry are, and the experiment the runs log to. Importing this module
does not import MLflow (seconds of every run's start, and the code location builds its resources from it); the
client does, when asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys_assets.settings import Settings


@dataclass(frozen=True)
class MlflowStore:
    tracking_uri: str
    experiment: str = "recsys"
    artifact_location: str | None = None  # where a new experiment keeps its artifacts (else ./mlruns)

    @classmethod
    def local(cls, folder: Path) -> MlflowStore:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{folder.resolve() / 'mlflow.db'}", artifact_location=(folder / "artifacts").resolve().as_uri())

    @classmethod
    def for_settings(cls, settings: Settings) -> MlflowStore:
        """SQLite + local artifacts under RECSYS_HOME/mlflow, or the MLflow server of settings.mlflow_uri."""
        return cls(settings.mlflow_uri) if settings.mlflow_uri else cls.local(settings.home / "mlflow")

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def ensure_experiment(self) -> str:
        """Create the experiment with its artifact location once (mlflow.set_experiment would not)."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
