variable "project_id" {
  description = "The GCP project (also RECSYS_GCP_PROJECT; bucket names derive from it)."
  type        = string
}

variable "region" {
  description = "Region of the cluster, the buckets, Redis and Cloud SQL."
  type        = string
  default     = "europe-west1"
}

variable "kubernetes_version" {
  description = "GKE minimum master version; deploy/check.py validates the manifests at this version."
  type        = string
  default     = "1.33"
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
