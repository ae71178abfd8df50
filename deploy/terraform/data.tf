# Buckets: landing (daily review files), artifacts (MLflow, Dagster compute logs, the shared RECSYS_HOME
# files), feast (the Feast registry). BigQuery: raw (the loaded reviews), features (dbt's tables, Feast's
# offline store). Names are the code's defaults for project var.project_id (recsys_assets/defs/resources.py).
resource "google_storage_bucket" "recsys" {
  for_each                    = toset(["landing", "artifacts", "feast"])
  name                        = "${var.project_id}-${each.key}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = each.key == "feast"
  }
}

resource "google_bigquery_dataset" "recsys" {
  for_each   = toset(["raw", "features"])
  dataset_id = each.key
  location   = var.region
}

resource "google_artifact_registry_repository" "recsys" {
  location      = var.region
  repository_id = "recsys"
  format        = "DOCKER"
}

# Feast's online store and the serving store (candidates, releases): reachable from the cluster's VPC only,
# with AUTH; its URL goes to the Secret recsys-redis (key url).
resource "google_redis_instance" "recsys" {
  name               = "recsys"
  tier               = "STANDARD_HA"
  memory_size_gb     = var.redis_memory_gb
  region             = var.region
  redis_version      = "REDIS_7_2"
  auth_enabled       = true
  authorized_network = data.google_compute_network.cluster.id
  connect_mode       = "PRIVATE_SERVICE_ACCESS"
  depends_on         = [google_service_networking_connection.private_services]
}

# The Dagster instance (runs, events, schedules) and MLflow's runs and registry.
resource "google_sql_database_instance" "recsys" {
  name                = "recsys-postgres"
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = true
  depends_on          = [google_service_networking_connection.private_services]
  settings {
    tier = var.sql_tier
    ip_configuration {
      ipv4_enabled    = false
      private_network = data.google_compute_network.cluster.id
    }
    backup_configuration {
      enabled = true
    }
  }
}

resource "google_sql_database" "recsys" {
  for_each = toset(["dagster", "mlflow"])
  name     = each.key
  instance = google_sql_database_instance.recsys.name
}

# Private services access: Memorystore and Cloud SQL get addresses inside the cluster's VPC.
data "google_compute_network" "cluster" {
  name = google_container_cluster.recsys.network
}

resource "google_compute_global_address" "private_services" {
  name          = "recsys-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 16
  network       = data.google_compute_network.cluster.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = data.google_compute_network.cluster.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
}

# The API's public address (deploy/k8s/ingress.yaml names it).
resource "google_compute_global_address" "api" {
  name = "recsys-api"
}
