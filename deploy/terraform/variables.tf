# The deployment's one input: these values (terraform.tfvars) and the outputs Terraform derives from them.
# deploy/render.py renders the Kubernetes manifests and the Dagster Helm values from those outputs.

variable "project_id" {
  description = "The GCP project: buckets, images and service accounts are named from it."
  type        = string
}

variable "region" {
  description = "Region of the cluster, the buckets, the datasets, Redis and Cloud SQL."
  type        = string
  default     = "europe-west1"
}

variable "gpu_zones" {
  description = "Zones of the region with NVIDIA L4 GPUs (the GPU node pool's nodes); must lie in var.region."
  type        = list(string)
  default     = ["europe-west1-b", "europe-west1-c"]
  validation {
    condition     = alltrue([for zone in var.gpu_zones : startswith(zone, "${var.region}-")])
    error_message = "Every zone of gpu_zones must lie in var.region."
  }
}

variable "api_domain" {
  description = "The API's DNS name: the Ingress serves HTTPS for it with a Google-managed certificate, so point an A record at the api_address output. Empty: <address with dashes>.sslip.io, a public DNS name that resolves to the address itself (no DNS of your own needed)."
  type        = string
  default     = ""
}

variable "kubernetes_version" {
  description = "The oldest Kubernetes the manifests must suit: deploy/check.py validates them at it. The cluster runs the REGULAR channel's version, which GKE keeps at or above it (no version is pinned: a pinned minor leaves the channel's offer within months)."
  type        = string
  default     = "1.33"
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose tags deploy (.github/workflows/ci.yaml); empty: no CI deployer."
  type        = string
  default     = ""
}

variable "cpu_machine_type" {
  type    = string
  default = "e2-standard-8"
}

variable "cpu_nodes_max" {
  type    = number
  default = 6
}

variable "gpu_machine_type" {
  type    = string
  default = "g2-standard-8"
}

variable "gpu_nodes_max" {
  type    = number
  default = 2
}

variable "redis_memory_gb" {
  type    = number
  default = 5
}

variable "sql_tier" {
  type    = string
  default = "db-custom-2-7680"
}
