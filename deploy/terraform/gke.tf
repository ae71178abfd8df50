# The cluster: a CPU pool (Dagster, the serving RayService, Qdrant, MLflow, CPU training) and a GPU pool for
# training that scales to zero. Dataplane V2 enforces the NetworkPolicies (deploy/k8s/networkpolicies.yaml);
# workload identity maps each Kubernetes service account to a Google one; the Cloud Storage FUSE CSI driver
# mounts the shared RECSYS_HOME bucket in Dagster's run and step pods.
resource "google_container_cluster" "recsys" {
  name                     = "recsys"
  location                 = var.region
  network                  = google_compute_network.recsys.id
  subnetwork               = google_compute_subnetwork.nodes.id
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = true
  networking_mode          = "VPC_NATIVE"
  datapath_provider        = "ADVANCED_DATAPATH"
  depends_on               = [google_project_service.api["container.googleapis.com"]]

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }
  release_channel {
    channel = "REGULAR"
  }
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }
  addons_config {
    gcs_fuse_csi_driver_config {
      enabled = true
    }
  }
  # The default pool is removed once the cluster exists; until then it runs as our node account too (the
  # Compute Engine default account has no roles in organisations created since May 2024).
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
  }
}

resource "google_container_node_pool" "cpu" {
  name     = "cpu"
  cluster  = google_container_cluster.recsys.id
  location = var.region
  autoscaling {
    total_min_node_count = 1
    total_max_node_count = var.cpu_nodes_max
  }
  node_config {
    machine_type    = var.cpu_machine_type
    disk_size_gb    = 100
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
  depends_on = [google_project_iam_member.nodes] # nodes write logs and metrics from their first minute
}

resource "google_container_node_pool" "gpu" {
  name           = "gpu"
  cluster        = google_container_cluster.recsys.id
  location       = var.region
  node_locations = var.gpu_zones
  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_nodes_max
  }
  node_config {
    machine_type    = var.gpu_machine_type
    disk_size_gb    = 200
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    guest_accelerator {
      type  = "nvidia-l4"
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
  depends_on = [google_project_iam_member.nodes] # nodes write logs and metrics from their first minute
}
