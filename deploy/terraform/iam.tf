# Service accounts, least privilege: the nodes' own account (image pulls, logs, metrics), and one Google
# account per workload that its Kubernetes service account acts as (workload identity). Bucket and dataset
# roles are granted where each workload needs them, nowhere else.
locals {
  namespace = "recsys"
  workloads = {
    dagster  = { ksa = "recsys-dagster", project_roles = ["roles/bigquery.jobUser"] }
    serving  = { ksa = "recsys-serving", project_roles = [] }
    training = { ksa = "recsys-training", project_roles = [] }
    mlflow   = { ksa = "recsys-mlflow", project_roles = ["roles/cloudsql.client"] } # its Cloud SQL Auth Proxy
  }
  # Dagster loads landing files, writes RECSYS_HOME (mounted), compute logs and the Feast registry; serving
  # reads the Feast registry; Ray Train checkpoints to artifacts; MLflow keeps model artifacts there.
  bucket_roles = {
    dagster-landing   = { workload = "dagster", bucket = "landing", role = "roles/storage.objectUser" }
    dagster-artifacts = { workload = "dagster", bucket = "artifacts", role = "roles/storage.objectUser" }
    dagster-feast     = { workload = "dagster", bucket = "feast", role = "roles/storage.objectUser" }
    serving-feast     = { workload = "serving", bucket = "feast", role = "roles/storage.objectViewer" }
    training-artifact = { workload = "training", bucket = "artifacts", role = "roles/storage.objectUser" }
    mlflow-artifacts  = { workload = "mlflow", bucket = "artifacts", role = "roles/storage.objectUser" }
  }
  # Dagster (dbt, Feast's offline store) writes both datasets; serving and training read the features.
  dataset_roles = {
    dagster-raw       = { workload = "dagster", dataset = "raw", role = "roles/bigquery.dataEditor" }
    dagster-features  = { workload = "dagster", dataset = "features", role = "roles/bigquery.dataEditor" }
    serving-features  = { workload = "serving", dataset = "features", role = "roles/bigquery.dataViewer" }
    training-features = { workload = "training", dataset = "features", role = "roles/bigquery.dataViewer" }
  }
  project_roles = flatten([
    for name, w in local.workloads : [for role in w.project_roles : { name = name, role = role }]
  ])
}

resource "google_service_account" "nodes" {
  account_id   = "recsys-nodes"
  display_name = "recsys GKE nodes"
  depends_on   = [google_project_service.api["iam.googleapis.com"]]
}

resource "google_project_iam_member" "nodes" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

# Image pulls are the kubelet's, as the node account.
resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  location   = google_artifact_registry_repository.recsys.location
  repository = google_artifact_registry_repository.recsys.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_service_account" "workload" {
  for_each     = local.workloads
  account_id   = "recsys-${each.key}"
  display_name = "recsys ${each.key}"
  depends_on   = [google_project_service.api["iam.googleapis.com"]]
}

resource "google_project_iam_member" "workload" {
  for_each = { for r in local.project_roles : "${r.name}-${r.role}" => r }
  project  = var.project_id
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.workload[each.value.name].email}"
}

# The workload pool exists once the cluster does.
resource "google_service_account_iam_member" "workload_identity" {
  for_each           = local.workloads
  service_account_id = google_service_account.workload[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${google_container_cluster.recsys.workload_identity_config[0].workload_pool}[${local.namespace}/${each.value.ksa}]"
}

resource "google_storage_bucket_iam_member" "workload" {
  for_each = local.bucket_roles
  bucket   = google_storage_bucket.recsys[each.value.bucket].name
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.workload[each.value.workload].email}"
}

resource "google_bigquery_dataset_iam_member" "workload" {
  for_each   = local.dataset_roles
  dataset_id = google_bigquery_dataset.recsys[each.value.dataset].dataset_id
  role       = each.value.role
  member     = "serviceAccount:${google_service_account.workload[each.value.workload].email}"
}
