"""The warehouse: loading raw partitions (DuckDB locally, BigQuery on GCP) and validating them."""
