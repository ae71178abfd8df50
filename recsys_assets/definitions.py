"""The code location: one Definitions object; RECSYS_ENV (local|gcp) picks resources and executor."""

from dagster import Definitions

from recsys_assets.defs import (
    candidates,
    evaluation,
    feature_store,
    features,
    freshness,
    index,
    ingest,
    interactions,
    models,
    serving,
    tags,
    training_data,
    tuning,
)
from recsys_assets.defs.resources import EXECUTOR_BY_ENV, resources_for
from recsys_assets.defs.sensors import automation_sensor, landing_sensor
from recsys_assets.settings import get_settings

settings = get_settings()

defs = Definitions(
    assets=[
        ingest.raw_reviews,
        ingest.item_metadata,
        interactions.landed_interactions,
        features.dbt_features,
        feature_store.feast_definitions,
        feature_store.online_features,
        tags.item_tags,
        tags.tag_embeddings,
        training_data.training_dataset,
        models.item2vec,
        models.two_tower,
        models.ranker,
        tuning.two_tower_tuning,
        evaluation.model_evaluation,
        evaluation.promotion,
        index.two_tower_index,
        index.item2vec_index,
        index.tag_index,
        candidates.popular_items,
        candidates.i2i_candidates,
        candidates.u2i_candidates,
        candidates.ease_candidates,
        candidates.recent_popularity,
        candidates.user_sequences,
        candidates.item_catalog,
        serving.serving_release,
    ],
    asset_checks=freshness.FRESHNESS_CHECKS,
    jobs=[serving.serving_refresh_job, interactions.land_interactions_job],
    schedules=[interactions.land_interactions_schedule],
    sensors=[landing_sensor, automation_sensor, serving.champion_sensor, freshness.freshness_sensor],
    resources=resources_for(settings),
    executor=EXECUTOR_BY_ENV[settings.env],
)
