# The GitHub Actions deployer (.github/workflows/ci.yaml, on a v* tag): GitHub's OIDC tokens for
# var.github_repository, exchanged through workload identity federation (no key anywhere), act as a service
# account that pushes images, reads this state and deploys to the cluster. Skipped when the variable is empty.
locals {
  deployer = var.github_repository == "" ? toset([]) : toset(["github"])
}

resource "google_iam_workload_identity_pool" "ci" {
  for_each                  = local.deployer
  workload_identity_pool_id = "recsys-ci"
  display_name              = "recsys CI"
  depends_on                = [google_project_service.api["iam.googleapis.com"]]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  for_each                           = local.deployer
  workload_identity_pool_id          = google_iam_workload_identity_pool.ci[each.key].workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub Actions"
  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
  }
  attribute_condition = "assertion.repository == \"${var.github_repository}\" && assertion.ref.startsWith(\"refs/tags/v\")"
  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "deployer" {
  for_each     = local.deployer
  account_id   = "recsys-deployer"
  display_name = "recsys CI deployer"
  depends_on   = [google_project_service.api["iam.googleapis.com"]]
}

resource "google_service_account_iam_member" "deployer_federation" {
  for_each           = local.deployer
  service_account_id = google_service_account.deployer[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.ci[each.key].name}/attribute.repository/${var.github_repository}"
}

# Deploys into the cluster (Helm upgrade, kubectl apply; RBAC objects were made by the first, manual install).
resource "google_project_iam_member" "deployer_cluster" {
  for_each = local.deployer
  project  = var.project_id
  role     = "roles/container.developer"
  member   = "serviceAccount:${google_service_account.deployer[each.key].email}"
}

resource "google_artifact_registry_repository_iam_member" "deployer_push" {
  for_each   = local.deployer
  location   = google_artifact_registry_repository.recsys.location
  repository = google_artifact_registry_repository.recsys.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.deployer[each.key].email}"
}

# Reads this configuration's state (the outputs deploy/render.py renders from); the state bucket is made
# by hand before the first apply, so it is named here, not managed.
resource "google_storage_bucket_iam_member" "deployer_state" {
  for_each   = local.deployer
  bucket     = "${var.project_id}-tfstate"
  role       = "roles/storage.objectViewer"
  member     = "serviceAccount:${google_service_account.deployer[each.key].email}"
  depends_on = [google_project_service.api["storage.googleapis.com"]]
}
