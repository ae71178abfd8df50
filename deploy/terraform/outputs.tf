output "cluster" {
  value = google_container_cluster.recsys.name
}

output "image_repository" {
  value = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.recsys.repository_id}"
}

output "buckets" {
  value = { for k, b in google_storage_bucket.recsys : k => b.name }
}

output "redis_host" {
  value = google_redis_instance.recsys.host
}

output "postgres_connection_name" {
  value = google_sql_database_instance.recsys.connection_name
}

output "workload_service_accounts" {
  value = { for k, sa in google_service_account.workload : k => sa.email }
}
