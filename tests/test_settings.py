"""One configuration: every RECSYS_* variable is read by `Settings` only, once, with one default each; the
tools (dbt, Feast) and the README take it from there."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_assets.defs.shared.resources import TrainingResource, resources_for
from recsys_assets.feature_store.repository import ENVIRONMENTS_DIR, FeatureStoreConfig
from recsys_assets.serving.config import ServingConfig
from recsys_assets.settings import REPO_ROOT, GcpSettings, ServingSettings, Settings, TrainingSettings, get_settings

PRODUCT = REPO_ROOT / "recsys_assets"


def test_each_variable_reaches_its_setting(monkeypatch, tmp_path):
    values = {"RECSYS_HOME": str(tmp_path), "RECSYS_TRAIN_EXECUTOR": "ray", "RECSYS_RAY_WORKERS": "3",
              "RECSYS_RAY_USE_GPU": "1", "RECSYS_TUNING_BUDGET_S": "60", "RECSYS_SERVE_PORT": "8123",
              "RECSYS_SERVE_REPLICAS": "4", "RECSYS_SERVE_MAX_REPLICAS": "6", "RECSYS_QDRANT_URL": "http://q:6333",
              "RECSYS_START_DATE": "2024-02-03"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = get_settings()
    assert settings.home == tmp_path and str(settings.start_date) == "2024-02-03"
    assert (settings.training.executor, settings.training.ray_workers, settings.training.ray_use_gpu) == ("ray", 3, True)
    assert settings.training.tuning_time_budget_s == 60.0
    assert (settings.serving.port, settings.serving.replicas, settings.serving.max_replicas) == (8123, 4, 6)
    assert settings.qdrant_url == "http://q:6333"
    # ... and on into what uses them, with nothing read on the way.
    training = resources_for(settings)["training"]
    assert (training.executor, training.ray_workers, training.tuning_time_budget_s) == ("ray", 3, 60.0)
    serving = ServingConfig.from_settings(settings)
    assert (serving.port, serving.replicas, serving.max_replicas) == (8123, 4, 6)


def test_a_field_answers_to_its_one_variable_only(monkeypatch):
    monkeypatch.setenv("RECSYS_PORT", "9")  # the field's name, not its variable (RECSYS_SERVE_PORT)
    monkeypatch.setenv("RECSYS_EXECUTOR", "ray")
    settings = get_settings()
    assert settings.serving.port == ServingSettings.model_fields["port"].default
    assert settings.training.executor == "in_process"
    # Choices in any case, and 0 autoscaling replicas = a fixed number, as the variables meant before.
    monkeypatch.setenv("RECSYS_ONLINE_STORE", " Redis")
    monkeypatch.setenv("RECSYS_REDIS_URL", "127.0.0.1:6379")
    monkeypatch.setenv("RECSYS_SERVE_MAX_REPLICAS", "0")
    settings = get_settings()
    assert (settings.online_store, settings.serving.max_replicas) == ("redis", None)


def test_a_bad_value_is_refused_with_its_variable(monkeypatch):
    monkeypatch.setenv("RECSYS_SERVE_PORT", "eighty")
    with pytest.raises(ValueError, match="RECSYS_SERVE_PORT: .*integer"):
        get_settings()
    monkeypatch.setenv("RECSYS_SERVE_PORT", "8000")
    monkeypatch.setenv("RECSYS_TRAIN_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="RECSYS_TRAIN_EXECUTOR: .*in_process.*ray"):
        get_settings()


def test_gcp_needs_its_project_and_derives_names_from_it(monkeypatch):
    monkeypatch.setenv("RECSYS_ENV", "gcp")
    monkeypatch.delenv("RECSYS_GCP_PROJECT", raising=False)
    with pytest.raises(ValueError, match="RECSYS_ENV=gcp needs RECSYS_GCP_PROJECT"):
        get_settings()
    monkeypatch.setenv("RECSYS_GCP_PROJECT", "acme-recs")
    settings = get_settings()
    assert settings.gcp.landing == "acme-recs-landing"
    assert settings.gcp.registry == "gs://acme-recs-feast/registry.db"
    assert (settings.online_store, settings.serving_store, settings.redis_url) == ("redis", "redis", "redis-master:6379")
    resources = resources_for(settings)
    assert resources["warehouse"].bigquery_project == "acme-recs" and resources["landing"].gcs_bucket == "acme-recs-landing"


def test_resources_leave_the_environment_alone(monkeypatch, tmp_path):
    monkeypatch.delenv("RECSYS_HOME", raising=False)
    resources_for(Settings(home=tmp_path / "a"))
    assert "RECSYS_HOME" not in os.environ  # dbt gets its values when it starts, from its own settings
    assert resources_for(Settings(home=tmp_path / "b"))["dbt"].profile_environment == {"RECSYS_HOME": str(tmp_path / "b")}


def test_the_environment_is_read_in_settings_only():
    readers = []
    for path in PRODUCT.rglob("*.py"):
        if path.name == "settings.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(environ(\.get)?\(|environ\[|getenv\()\s*[\"']RECSYS_", line):
                readers.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not readers, "\n".join(readers)


def test_each_default_is_written_once():
    # The resources and the serving config take the sections' fields by name, with no defaults of their own.
    training_fields = set(TrainingResource.model_fields)
    assert set(TrainingSettings.model_fields) <= training_fields
    assert all(TrainingResource.model_fields[name].is_required() for name in TrainingSettings.model_fields)
    serving_fields = {f.name: f for f in dataclasses.fields(ServingConfig)}
    assert set(serving_fields) - {"settings"} == set(ServingSettings.model_fields)
    assert all(f.default is dataclasses.MISSING for f in serving_fields.values())
    # dbt's files read what Settings.dbt_environment gives them (Feast's, feast_variables), and default none.
    gcp = Settings(env="gcp", gcp=GcpSettings(gcp_project="p"))
    dbt_files = [p for p in (REPO_ROOT / "dbt_project").rglob("*.yml") if "target" not in p.parts]
    read_by_dbt = {name for p in dbt_files for name in re.findall(r"env_var\('(RECSYS_[A-Z_]+)'", p.read_text())}
    assert read_by_dbt and read_by_dbt <= set(gcp.dbt_environment())
    assert not any(re.search(r"env_var\('[A-Z_]+',", p.read_text()) for p in dbt_files)
    read_by_feast = {name for p in ENVIRONMENTS_DIR.rglob("feature_store.yaml")
                     for name in re.findall(r"\$\{(RECSYS_[A-Z_]+)\}", p.read_text())}
    assert read_by_feast <= set(gcp.feast_variables())
    # No secret goes to dbt (or to `recsys config --export`).
    assert "RECSYS_REDIS_URL" not in gcp.dbt_environment()


def test_the_readme_table_is_the_configuration():
    readme = (REPO_ROOT / "README.md").read_text()
    assert Settings.markdown_table() in readme, "README's configuration table is stale: recsys config --markdown"
    documented = set(re.findall(r"`(RECSYS_[A-Z0-9_]+)", readme))
    # Every variable the README names is one the configuration reads (or a test-only switch).
    assert documented - set(Settings.environment_variables()) == set()


def test_feast_environment_files_load_with_settings(tmp_path):
    local = FeatureStoreConfig.for_settings(Settings(home=tmp_path))
    config = local.repo_config()
    assert (config.online_store.type, config.offline_store.type.rsplit(".", 1)[-1]) == ("sqlite", "AsofDuckDBOfflineStore")
    redis = FeatureStoreConfig.local(tmp_path / "feast", online="redis", redis_url="redis://:secret@cache:6380/1")
    assert redis.repo_config().online_store.connection_string == "cache:6380,password=secret,db=1"
    with pytest.raises(ValueError, match="needs RECSYS_REDIS_URL"):
        FeatureStoreConfig(tmp_path, "local-redis", {}).repo_config()
    # A password with YAML's own characters stays one value.
    odd = FeatureStoreConfig.local(tmp_path / "feast", online="redis", redis_url="cache:6380,password=a: b #c")
    assert odd.repo_config().online_store.connection_string == "cache:6380,password=a: b #c"
    # The copy for Feast's CLI keeps the variables for Feast to read from its environment: no secret on disk.
    written = redis.write_repository_file().read_text()
    assert "connection_string: ${RECSYS_REDIS_URL}" in written and "secret" not in written


def test_feasts_own_cli_opens_the_store_the_pipeline_built(featured_home):
    out = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "feast", "feature-views", "list"],
                         env={**_env(), "RECSYS_HOME": str(featured_home.path)}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "user_rating_stats" in out.stdout and "parent_asin_rating_stats_fresh" in out.stdout


def test_recsys_feast_refuses_what_would_remove_the_pipelines_views(capsys):
    from recsys_assets.cli import main

    for words in (["apply"], ["--log-level", "debug", "apply"], ["teardown"]):
        assert main(["feast", *words]) == 2, words
        assert "feast_definitions" in capsys.readouterr().err


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") or k == "RECSYS_START_DATE"}


def test_recsys_config_names_each_variable_and_hides_secrets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "recsys_assets.cli", "config"],
                         env={**_env(), "RECSYS_HOME": str(tmp_path), "RECSYS_API_TOKEN": "s3cret"},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "s3cret" not in out and re.search(r"RECSYS_API_TOKEN +\(set, hidden\) +environment", out)
    assert re.search(rf"RECSYS_HOME +{re.escape(str(Path(tmp_path).resolve()))} +environment", out)
    assert len(out.splitlines()) == len(Settings.environment_variables())


def test_a_rayservices_args_reach_the_replicas(monkeypatch, tmp_path):
    """Each replica builds its config from its environment: the args (and the CLI's flags) travel in it."""
    from recsys_assets.serving.deploy import app_builder

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    app = app_builder({"reload_interval_s": 7, "canary_share": 0.2, "max_ongoing_requests": 4})
    replica_env = app._bound_deployment.ray_actor_options["runtime_env"]["env_vars"]
    for name, value in replica_env.items():
        monkeypatch.setenv(name, value)
    replica = ServingConfig.from_env()
    assert (replica.reload_interval_s, replica.canary_share, replica.max_ongoing_requests) == (7.0, 0.2, 4)
    assert replica.settings.home == tmp_path
