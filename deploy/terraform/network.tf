# The platform's own VPC (no reliance on a `default` network, which organisation policies often remove):
# one subnet for the nodes with secondary ranges for pods and services, and private services access so
# Memorystore and Cloud SQL get addresses inside it.
resource "google_compute_network" "recsys" {
  name                    = "recsys"
  auto_create_subnetworks = false
  depends_on              = [google_project_service.api["compute.googleapis.com"]]
}

resource "google_compute_subnetwork" "nodes" {
  name                     = "recsys-nodes"
  network                  = google_compute_network.recsys.id
  region                   = var.region
  ip_cidr_range            = "10.0.0.0/20"
  private_ip_google_access = true
  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.4.0.0/14"
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.8.0.0/20"
  }
}

resource "google_compute_global_address" "private_services" {
  name          = "recsys-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 16
  network       = google_compute_network.recsys.id
  depends_on    = [google_compute_subnetwork.nodes] # allocated around the subnet's ranges, not over them
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.recsys.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
  depends_on              = [google_project_service.api["servicenetworking.googleapis.com"]]
}

# The API's public address (the rendered Ingress names it).
resource "google_compute_global_address" "api" {
  name       = "recsys-api"
  depends_on = [google_project_service.api["compute.googleapis.com"]]
}
