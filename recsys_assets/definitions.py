"""The code location: one Definitions object; RECSYS_ENV (local|gcp) picks resources and executor."""

from dagster import Definitions

from recsys_assets.defs import evaluation, feature_store, features, ingest, models, tags, training_data
from recsys_assets.defs.resources import EXECUTOR_BY_ENV, resources_for
from recsys_assets.defs.sensors import automation_sensor, landing_sensor
from recsys_assets.settings import get_settings

settings = get_settings()

defs = Definitions(
    assets=[
        ingest.raw_reviews,
        ingest.item_metadata,
        features.dbt_features,
        feature_store.feast_definitions,
        feature_store.online_features,
        tags.item_tags,
        tags.tag_embeddings,
        training_data.training_dataset,
        models.item2vec,
        models.two_tower,
        models.ranker,
        evaluation.model_evaluation,
        evaluation.promotion,
    ],
    sensors=[landing_sensor, automation_sensor],
    resources=resources_for(settings),
    executor=EXECUTOR_BY_ENV[settings.env],
)
