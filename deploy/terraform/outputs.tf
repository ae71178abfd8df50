# What deploy/render.py renders the manifests, the Dagster values and the Secrets from
# (`terraform output -json`); deploy/check.py checks each name it reads is declared here.

output "project_id" {
  value = var.project_id
}

output "region" {
  value = var.region
}

output "cluster" {
  value = google_container_cluster.recsys.name
}

output "image_repository" {
  value = "${google_artifact_registry_repository.recsys.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.recsys.repository_id}"
}

output "buckets" {
  value = { for k, b in google_storage_bucket.recsys : k => b.name }
}

output "bigquery_datasets" {
  value = { for k, d in google_bigquery_dataset.recsys : k => d.dataset_id }
}

output "bigquery_location" {
  value = var.region
}

output "api_address_name" {
  value = google_compute_global_address.api.name
}

output "api_address" {
  value = google_compute_global_address.api.address
}

# The name the Ingress's managed certificate is for (var.api_domain, or one sslip.io resolves to the address).
output "api_domain" {
  value = var.api_domain != "" ? var.api_domain : "${replace(google_compute_global_address.api.address, ".", "-")}.sslip.io"
}

output "workload_service_accounts" {
  value = { for k, sa in google_service_account.workload : k => sa.email }
}

output "postgres_host" {
  value = google_sql_database_instance.recsys.private_ip_address
}

output "postgres_connection_name" {
  value = google_sql_database_instance.recsys.connection_name
}

output "postgres_passwords" {
  value     = { for k, p in random_password.database : k => p.result }
  sensitive = true
}

output "redis_host" {
  value = google_redis_instance.recsys.host
}

output "redis_port" {
  value = google_redis_instance.recsys.port
}

output "redis_auth" {
  value     = google_redis_instance.recsys.auth_string
  sensitive = true
}

output "redis_ca_certificate" {
  value = google_redis_instance.recsys.server_ca_certs[0].cert
}

output "api_token" {
  value     = random_password.api_token.result
  sensitive = true
}

output "qdrant_api_key" {
  value     = random_password.qdrant_api_key.result
  sensitive = true
}

output "state_bucket" {
  value = "${var.project_id}-tfstate"
}

output "github_workload_identity_provider" {
  value = one([for p in google_iam_workload_identity_pool_provider.github : p.name])
}

output "github_deployer_service_account" {
  value = one([for sa in google_service_account.deployer : sa.email])
}
