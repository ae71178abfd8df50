# One Google service account per workload; its Kubernetes service account (deploy/k8s/namespace.yaml)
# acts as it through workload identity.
locals {
  namespace = "recsys"
  workloads = {
    dagster = {
      ksa   = "recsys-dagster"
      roles = ["roles/bigquery.dataEditor", "roles/bigquery.jobUser", "roles/cloudsql.client"]
    }
    serving = {
      ksa   = "recsys-serving"
      roles = ["roles/bigquery.dataViewer", "roles/bigquery.jobUser"]
    }
    training = {
      ksa   = "recsys-training"
      roles = ["roles/bigquery.dataViewer", "roles/bigquery.jobUser"]
    }
    mlflow = {
      ksa   = "recsys-mlflow"
      roles = ["roles/cloudsql.client"]
    }
  }
  project_roles = flatten([
    for name, w in local.workloads : [for role in w.roles : { name = name, role = role }]
  ])
}

resource "google_service_account" "workload" {
  for_each     = local.workloads
  account_id   = "recsys-${each.key}"
  display_name = "recsys ${each.key}"
}

resource "google_project_iam_member" "workload" {
  for_each = { for r in local.project_roles : "${r.name}-${r.role}" => r }
  project  = var.project_id
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.workload[each.value.name].email}"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each           = local.workloads
  service_account_id = google_service_account.workload[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${local.namespace}/${each.value.ksa}]"
}

resource "google_storage_bucket_iam_member" "workload" {
  for_each = {
    for pair in setproduct(keys(local.workloads), keys(google_storage_bucket.recsys)) :
    "${pair[0]}-${pair[1]}" => { workload = pair[0], bucket = pair[1] }
  }
  bucket = google_storage_bucket.recsys[each.value.bucket].name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.workload[each.value.workload].email}"
}

resource "google_artifact_registry_repository_iam_member" "pull" {
  for_each   = local.workloads
  location   = google_artifact_registry_repository.recsys.location
  repository = google_artifact_registry_repository.recsys.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.workload[each.key].email}"
}
