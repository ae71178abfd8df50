"""Orchestration: the Dagster assets, checks, sensors and resources. Thin: it calls library code."""
