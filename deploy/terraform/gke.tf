# The cluster: a CPU pool (Dagster, the serving RayService, Qdrant, MLflow, CPU training) and a GPU pool
# for training that scales to zero. Workload identity maps each Kubernetes service account to a Google one.
resource "google_container_cluster" "recsys" {
  name                     = "recsys"
  location                 = var.region
  min_master_version       = var.kubernetes_version
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = true
  networking_mode          = "VPC_NATIVE"
  ip_allocation_policy {}

  release_channel {
    channel = "REGULAR"
  }
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }
  network_policy {
    enabled = true
  }
  addons_config {
    network_policy_config {
      disabled = false
    }
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
    machine_type = var.cpu_machine_type
    disk_size_gb = 100
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  name     = "gpu"
  cluster  = google_container_cluster.recsys.id
  location = var.region
  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_nodes_max
  }
  node_config {
    machine_type = var.gpu_machine_type
    disk_size_gb = 200
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
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
}
