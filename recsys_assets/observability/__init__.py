"""Observability of the pipeline and the models: drift measures, Prometheus file_sd targets, Alertmanager
alerts (library: no dagster), and the pipeline exporter (`pipeline_exporter.py`: orchestration side, it reads
the Dagster instance)."""
