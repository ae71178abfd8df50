# Buckets: landing (daily review files), artifacts (MLflow, Dagster compute logs, the shared RECSYS_HOME,
# Ray Train's checkpoints), feast (the Feast registry). BigQuery: raw (the loaded reviews), features (dbt's
# tables, Feast's offline store). The code derives the same names from RECSYS_GCP_PROJECT.
locals {
  buckets  = toset(["landing", "artifacts", "feast"])
  datasets = toset(["raw", "features"])
}

resource "google_storage_bucket" "recsys" {
  for_each                    = local.buckets
  name                        = "${var.project_id}-${each.key}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = each.key == "feast"
  }
  depends_on = [google_project_service.api["storage.googleapis.com"]]
}

resource "google_bigquery_dataset" "recsys" {
  for_each   = local.datasets
  dataset_id = each.key
  location   = var.region
  depends_on = [google_project_service.api["bigquery.googleapis.com"]]
}

resource "google_artifact_registry_repository" "recsys" {
  location      = var.region
  repository_id = "recsys"
  format        = "DOCKER"
  depends_on    = [google_project_service.api["artifactregistry.googleapis.com"]]
}

# Feast's online store and the serving store (candidates, releases): reachable from the cluster's VPC only,
# with AUTH and TLS (clients verify the server against its CA: the Secret recsys-redis, deploy/render.py).
resource "google_redis_instance" "recsys" {
  name                    = "recsys"
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.redis_memory_gb
  region                  = var.region
  redis_version           = "REDIS_7_2"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  authorized_network      = google_compute_network.recsys.id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  depends_on = [
    google_project_service.api["redis.googleapis.com"],
    google_service_networking_connection.private_services,
  ]
}

# The Dagster instance (runs, events, schedules) and MLflow's runs and registry, on the VPC's private IP.
resource "google_sql_database_instance" "recsys" {
  name                = "recsys-postgres"
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = true
  depends_on = [
    google_project_service.api["sqladmin.googleapis.com"],
    google_service_networking_connection.private_services,
  ]
  settings {
    # Without an edition the API picks ENTERPRISE_PLUS for PostgreSQL 16, which refuses custom tiers.
    edition = "ENTERPRISE"
    tier    = var.sql_tier
    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.recsys.id
    }
    backup_configuration {
      enabled = true
    }
  }
}

locals {
  databases = toset(["dagster", "mlflow"])
}

resource "google_sql_database" "recsys" {
  for_each = local.databases
  name     = each.key
  instance = google_sql_database_instance.recsys.name
}

# One login per database; the passwords reach the cluster as Secrets (deploy/render.py secrets).
resource "random_password" "database" {
  for_each = local.databases
  length   = 32
  special  = false
}

resource "google_sql_user" "recsys" {
  for_each = local.databases
  name     = each.key
  instance = google_sql_database_instance.recsys.name
  password = random_password.database[each.key].result
}

# The bearer token POST /interactions asks for (Secret recsys-api).
resource "random_password" "api_token" {
  length  = 40
  special = false
}

# Qdrant's API key (Secret recsys-qdrant): the server requires it, our clients send it.
resource "random_password" "qdrant_api_key" {
  length  = 40
  special = false
}
